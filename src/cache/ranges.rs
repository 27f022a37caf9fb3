//! A set of byte ranges: which parts of a cache file hold valid data.

use std::collections::BTreeMap;
use std::ops::Range;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start -> end, non-overlapping, non-adjacent.
    spans: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    /// Everything from 0 on: a file created locally has no remote data to fetch.
    pub fn full() -> RangeSet {
        let mut set = RangeSet::new();
        set.insert(0..u64::MAX);
        set
    }

    pub fn from_spans(spans: &[(u64, u64)]) -> RangeSet {
        let mut set = RangeSet::new();
        for &(start, end) in spans {
            set.insert(start..end);
        }
        set
    }

    pub fn spans(&self) -> Vec<(u64, u64)> {
        self.spans.iter().map(|(&s, &e)| (s, e)).collect()
    }

    pub fn insert(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let (mut start, mut end) = (range.start, range.end);
        // Merge with a span that starts before and reaches `start`.
        if let Some((&s, &e)) = self.spans.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
            }
        }
        // Swallow every span starting inside [start, end].
        let inside: Vec<u64> = self.spans.range(start..=end).map(|(&s, _)| s).collect();
        for s in inside {
            let e = self.spans.remove(&s).unwrap_or(s);
            end = end.max(e);
        }
        self.spans.insert(start, end);
    }

    /// The parts of `range` not in the set, in order.
    pub fn missing(&self, range: Range<u64>) -> Vec<Range<u64>> {
        let mut gaps = Vec::new();
        let mut cursor = range.start;
        if let Some((_, &e)) = self.spans.range(..=range.start).next_back() {
            cursor = cursor.max(e);
        }
        for (&s, &e) in self.spans.range(range.start..range.end) {
            if s > cursor {
                gaps.push(cursor..s.min(range.end));
            }
            cursor = cursor.max(e);
        }
        if cursor < range.end {
            gaps.push(cursor..range.end);
        }
        gaps
    }

    pub fn contains(&self, range: Range<u64>) -> bool {
        range.is_empty() || self.missing(range).is_empty()
    }

    /// Bytes present below `limit`.
    pub fn bytes_below(&self, limit: u64) -> u64 {
        self.spans
            .iter()
            .map(|(&s, &e)| e.min(limit).saturating_sub(s))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_merge_overlapping_and_adjacent() {
        let mut set = RangeSet::new();
        set.insert(10..20);
        set.insert(30..40);
        set.insert(20..30);
        assert_eq!(set.spans.len(), 1);
        assert!(set.contains(10..40));
        set.insert(5..12);
        set.insert(38..50);
        assert!(set.contains(5..50));
        assert!(!set.contains(4..50));
    }

    #[test]
    fn missing_lists_the_gaps() {
        let mut set = RangeSet::new();
        set.insert(10..20);
        set.insert(30..40);
        assert_eq!(set.missing(0..50), vec![0..10, 20..30, 40..50]);
        assert_eq!(set.missing(12..18), vec![]);
        assert_eq!(set.missing(15..35), vec![20..30]);
        assert_eq!(set.missing(20..30), vec![20..30]);
        assert_eq!(RangeSet::new().missing(3..9), vec![3..9]);
    }

    #[test]
    fn full_covers_everything() {
        assert!(RangeSet::full().contains(0..u64::MAX));
        assert!(RangeSet::full().missing(100..200).is_empty());
    }

    #[test]
    fn bytes_below_counts_present_data() {
        let mut set = RangeSet::new();
        set.insert(0..10);
        set.insert(20..u64::MAX);
        assert_eq!(set.bytes_below(30), 20);
    }
}
