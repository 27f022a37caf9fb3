//! How many conflict copies one file may make: a server that keeps refusing our
//! writes (or a client that keeps replacing the file) must not fill the bucket or the
//! disk with copies. Past the budget the file's upload is held, loudly, and its data
//! stays in the cache.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Conflict copies one file may make within `WINDOW`.
pub const PER_WINDOW: usize = 3;
pub const WINDOW: Duration = Duration::from_secs(3600);

#[derive(Debug, Default)]
pub struct ConflictBudget {
    /// Original key of a file -> when its recent conflict copies were made.
    made: HashMap<String, VecDeque<Instant>>,
    /// Inodes whose upload waits, with the key they wait at and until when.
    held: HashMap<u64, (String, Instant)>,
}

impl ConflictBudget {
    /// Whether `file` may make another conflict copy now; counts it if so.
    pub fn allow(&mut self, file: &str, now: Instant) -> bool {
        let times = self.made.entry(file.to_string()).or_default();
        while times
            .front()
            .is_some_and(|&t| now.duration_since(t) >= WINDOW)
        {
            times.pop_front();
        }
        if times.len() >= PER_WINDOW {
            return false;
        }
        times.push_back(now);
        true
    }

    /// When `file` may make a copy again.
    pub fn free_at(&self, file: &str, now: Instant) -> Instant {
        self.made
            .get(file)
            .and_then(|t| t.front())
            .map_or(now, |&oldest| oldest + WINDOW)
    }

    pub fn hold(&mut self, ino: u64, key: &str, until: Instant) {
        self.held.insert(ino, (key.to_string(), until));
    }

    /// Whether the upload of `ino` waits; forgets holds that are over.
    pub fn is_held(&mut self, ino: u64, now: Instant) -> bool {
        match self.held.get(&ino) {
            Some(&(_, until)) if now < until => true,
            Some(_) => {
                self.held.remove(&ino);
                false
            }
            None => false,
        }
    }

    /// Keys whose upload is held now, sorted.
    pub fn held_keys(&self, now: Instant) -> Vec<String> {
        let mut keys: Vec<String> = self
            .held
            .values()
            .filter(|(_, until)| now < *until)
            .map(|(key, _)| key.clone())
            .collect();
        keys.sort();
        keys
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_makes_at_most_three_copies_an_hour() {
        let mut budget = ConflictBudget::default();
        let start = Instant::now();
        for n in 0..PER_WINDOW {
            assert!(budget.allow("a.txt", start + Duration::from_secs(n as u64)));
        }
        assert!(!budget.allow("a.txt", start + Duration::from_secs(60)));
        assert!(
            budget.allow("b.txt", start + Duration::from_secs(60)),
            "per file"
        );
        assert_eq!(budget.free_at("a.txt", start), start + WINDOW);
        assert!(
            budget.allow("a.txt", start + WINDOW),
            "the oldest left the window"
        );
        assert!(!budget.allow("a.txt", start + WINDOW));
    }

    #[test]
    fn a_hold_ends_at_its_time() {
        let mut budget = ConflictBudget::default();
        let now = Instant::now();
        budget.hold(7, "a.txt", now + Duration::from_secs(10));
        assert!(budget.is_held(7, now));
        assert_eq!(budget.held_keys(now), vec!["a.txt".to_string()]);
        assert!(!budget.is_held(7, now + Duration::from_secs(10)));
        assert!(budget.held_keys(now).is_empty(), "forgotten once over");
    }
}
