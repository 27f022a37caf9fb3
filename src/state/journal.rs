//! The append-only journal in front of the state database. Recording a changed file
//! at close(2) is one write(2) of a few hundred bytes here instead of an SQLite
//! commit (~35 µs); the journal is folded into the database in one transaction
//! every few hundred records, before any other write, and at open. Its records are
//! always newer than everything in the database, so replaying them is correct, and
//! replaying twice is harmless (each record states an entry's whole new value).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

use super::{BaseObject, EntryKind, EntryRecord};

/// One change to the entries table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put(EntryRecord),
    Remove(String),
}

pub struct Journal {
    file: File,
    /// The changes the file holds, in order: what the next fold applies.
    pending: Vec<Change>,
}

impl Journal {
    /// Opens (or creates) the journal at `path`; its readable records come back
    /// pending. A torn or damaged record (a power loss mid-write) ends the replay.
    pub fn open(path: &Path) -> io::Result<Journal> {
        let mut file =
            crate::cache_dir::open_file(path, OpenOptions::new().read(true).append(true), true)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let pending = decode_all(&bytes);
        Ok(Journal { file, pending })
    }

    /// Appends `change` with one write(2): once this returns, a killed process
    /// loses nothing of it.
    pub fn append(&mut self, change: Change) -> io::Result<()> {
        let payload = encode(&change);
        let mut framed = Vec::with_capacity(payload.len() + 8);
        framed.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        framed.extend_from_slice(&checksum(&payload).to_le_bytes());
        framed.extend_from_slice(&payload);
        self.file.write_all(&framed)?;
        self.pending.push(change);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn pending(&self) -> &[Change] {
        &self.pending
    }

    /// Empties the journal, once the database holds what it said.
    pub fn clear(&mut self) -> io::Result<()> {
        self.file.set_len(0)?;
        self.pending.clear();
        Ok(())
    }
}

/// FNV-1a: catches a torn or zero-filled tail, which is all a checksum must do here.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn decode_all(mut bytes: &[u8]) -> Vec<Change> {
    let mut changes = Vec::new();
    while bytes.len() >= 8 {
        let len = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes")) as usize;
        let sum = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        let Some(payload) = bytes.get(8..8 + len) else {
            break;
        };
        if checksum(payload) != sum {
            break;
        }
        match decode(payload) {
            Some(change) => changes.push(change),
            None => break,
        }
        bytes = &bytes[8 + len..];
    }
    if !bytes.is_empty() {
        tracing::warn!(
            bytes = bytes.len(),
            "the state journal ends in a damaged record (a power loss?); it is left out"
        );
    }
    changes
}

const PUT: u8 = 1;
const REMOVE: u8 = 2;

fn encode(change: &Change) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    match change {
        Change::Remove(path) => {
            out.push(REMOVE);
            put_str(&mut out, path);
        }
        Change::Put(r) => {
            out.push(PUT);
            put_str(&mut out, &r.path);
            out.push(r.kind as u8);
            put_opt_str(&mut out, r.cache_file.as_deref());
            out.extend_from_slice(&r.size.to_le_bytes());
            for n in [r.perm, r.uid, r.gid] {
                out.extend_from_slice(&n.to_le_bytes());
            }
            out.extend_from_slice(&r.mtime_ns.to_le_bytes());
            put_opt_str(&mut out, r.target.as_deref());
            match &r.base {
                Some(base) => {
                    out.push(1);
                    put_str(&mut out, &base.key);
                    put_str(&mut out, &base.etag);
                    out.extend_from_slice(&base.size.to_le_bytes());
                }
                None => out.push(0),
            }
            out.extend_from_slice(&(r.present.len() as u32).to_le_bytes());
            for (start, end) in &r.present {
                out.extend_from_slice(&start.to_le_bytes());
                out.extend_from_slice(&end.to_le_bytes());
            }
            out.push(r.data_dirty as u8);
            out.push(r.meta_dirty as u8);
        }
    }
    out
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.push(1);
            put_str(out, s);
        }
        None => out.push(0),
    }
}

/// Reads fields off the front of a payload; None once it runs short.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.bytes(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.bytes(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.bytes(8)?.try_into().ok()?))
    }
    fn string(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        String::from_utf8(self.bytes(len)?.to_vec()).ok()
    }
    fn opt_string(&mut self) -> Option<Option<String>> {
        match self.u8()? {
            0 => Some(None),
            _ => Some(Some(self.string()?)),
        }
    }
}

fn decode(payload: &[u8]) -> Option<Change> {
    let mut r = Reader(payload);
    match r.u8()? {
        REMOVE => Some(Change::Remove(r.string()?)),
        PUT => {
            let path = r.string()?;
            let kind = EntryKind::from_number(r.u8()?.into())?;
            let cache_file = r.opt_string()?;
            let size = r.u64()?;
            let (perm, uid, gid) = (r.u32()?, r.u32()?, r.u32()?);
            let mtime_ns = r.u64()? as i64;
            let target = r.opt_string()?;
            let base = match r.u8()? {
                0 => None,
                _ => Some(BaseObject {
                    key: r.string()?,
                    etag: r.string()?,
                    size: r.u64()?,
                }),
            };
            let n = r.u32()? as usize;
            let mut present = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                present.push((r.u64()?, r.u64()?));
            }
            let data_dirty = r.u8()? != 0;
            let meta_dirty = r.u8()? != 0;
            Some(Change::Put(EntryRecord {
                path,
                kind,
                cache_file,
                size,
                perm,
                uid,
                gid,
                mtime_ns,
                target,
                base,
                present,
                data_dirty,
                meta_dirty,
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::record;

    #[test]
    fn changes_come_back_from_the_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut symlink = record("s");
        symlink.kind = EntryKind::Symlink;
        symlink.cache_file = None;
        symlink.target = Some("../t".into());
        symlink.base = None;
        symlink.present.clear();
        symlink.mtime_ns = -5;
        let changes = vec![
            Change::Put(record("a/b")),
            Change::Remove("a/b".into()),
            Change::Put(symlink),
        ];
        {
            let mut journal = Journal::open(&path).unwrap();
            for change in &changes {
                journal.append(change.clone()).unwrap();
            }
            assert_eq!(journal.pending(), &changes[..]);
        }
        assert_eq!(Journal::open(&path).unwrap().pending(), &changes[..]);
    }

    #[test]
    fn a_torn_or_damaged_tail_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        {
            let mut journal = Journal::open(&path).unwrap();
            journal.append(Change::Put(record("kept"))).unwrap();
            journal.append(Change::Put(record("torn"))).unwrap();
        }
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        let kept = [Change::Put(record("kept"))];
        assert_eq!(Journal::open(&path).unwrap().pending(), &kept[..]);

        let mut damaged = full.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        std::fs::write(&path, &damaged).unwrap();
        assert_eq!(Journal::open(&path).unwrap().pending(), &kept[..]);
    }

    #[test]
    fn clearing_empties_the_file_and_appends_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut journal = Journal::open(&path).unwrap();
        journal.append(Change::Remove("x".into())).unwrap();
        journal.clear().unwrap();
        assert!(journal.is_empty());
        journal.append(Change::Remove("y".into())).unwrap();
        drop(journal);
        let reopened = Journal::open(&path).unwrap();
        assert_eq!(reopened.pending(), &[Change::Remove("y".into())]);
        assert_eq!(reopened.len(), 1);
    }
}
