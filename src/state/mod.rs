//! The durable state (SQLite in WAL mode): every local change the bucket does not hold
//! yet, and every delete still owed to it. It is the only thing a restart needs:
//! clean data can always be read from the bucket again.

mod journal;
mod uploads;

use std::path::Path;

use parking_lot::{Mutex, MutexGuard};

use journal::{Change, Journal};
use rusqlite::{params, Connection, OptionalExtension};

/// Journal records folded into the database at once, at the most.
const FOLD_AT: usize = 512;

/// What a record says the entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File = 0,
    Dir = 1,
    Symlink = 2,
    /// Special files. Having no data, their record's `size` is the device number.
    Fifo = 3,
    Socket = 4,
    CharDevice = 5,
    BlockDevice = 6,
}

impl EntryKind {
    /// The kind a stored number names (`kind as u8` when written).
    pub fn from_number(n: i64) -> Option<EntryKind> {
        [
            EntryKind::File,
            EntryKind::Dir,
            EntryKind::Symlink,
            EntryKind::Fifo,
            EntryKind::Socket,
            EntryKind::CharDevice,
            EntryKind::BlockDevice,
        ]
        .into_iter()
        .find(|&kind| kind as i64 == n)
    }
}

/// The object an entry's data started from, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseObject {
    pub key: String,
    pub etag: String,
    pub size: u64,
}

/// One namespace entry that differs from the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRecord {
    /// Path relative to the mount root, components joined by `/`.
    pub path: String,
    pub kind: EntryKind,
    /// Name of the content file in the cache, for files.
    pub cache_file: Option<String>,
    pub size: u64,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i64,
    pub target: Option<String>,
    pub base: Option<BaseObject>,
    /// Byte ranges of the cache file that hold valid data.
    pub present: Vec<(u64, u64)>,
    pub data_dirty: bool,
    pub meta_dirty: bool,
}

pub struct StateDb {
    inner: Mutex<Inner>,
}

struct Inner {
    conn: Connection,
    /// Entry changes not yet in the database (none for an in-memory state).
    journal: Option<Journal>,
}

impl Inner {
    /// Applies the journal to the database in one transaction, then empties it.
    fn fold(&mut self) -> StateResult<()> {
        let Some(journal) = self.journal.as_mut().filter(|j| !j.is_empty()) else {
            return Ok(());
        };
        // A batch folds before it begins and journals nothing, so inside one the
        // journal is empty (a fold there could not clear it atomically with COMMIT).
        debug_assert!(self.conn.is_autocommit(), "journal records inside a batch");
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let applied = journal
            .pending()
            .iter()
            .try_for_each(|change| apply(&self.conn, change));
        if let Err(err) = applied.and_then(|()| self.conn.execute_batch("COMMIT")) {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(err);
        }
        // A crash before this replays the same records at the next open: harmless.
        journal.clear().map_err(io_error)
    }
}

fn io_error(err: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(err))
}

/// Writes one journal change to the database.
fn apply(conn: &Connection, change: &Change) -> StateResult<()> {
    match change {
        Change::Put(r) => {
            let (base_key, base_etag, base_size) = match &r.base {
                Some(b) => (
                    Some(b.key.as_str()),
                    Some(b.etag.as_str()),
                    Some(b.size as i64),
                ),
                None => (None, None, None),
            };
            conn.prepare_cached(
                "INSERT OR REPLACE INTO entries VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)",
            )?
            .execute(params![
                r.path,
                r.kind as i64,
                r.cache_file,
                r.size as i64,
                r.perm,
                r.uid,
                r.gid,
                r.mtime_ns,
                r.target,
                base_key,
                base_etag,
                base_size,
                encode_ranges(&r.present),
                r.data_dirty,
                r.meta_dirty,
            ])?;
        }
        Change::Remove(path) => {
            conn.prepare_cached("DELETE FROM entries WHERE path = ?1")?
                .execute(params![path])?;
        }
    }
    Ok(())
}

/// An error of the state database: writing local state failed, which the caller
/// must not hide (data could be lost on a crash).
pub type StateResult<T> = Result<T, rusqlite::Error>;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS entries (
    path TEXT PRIMARY KEY,
    kind INTEGER NOT NULL,
    cache_file TEXT,
    size INTEGER NOT NULL,
    perm INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    target TEXT,
    base_key TEXT,
    base_etag TEXT,
    base_size INTEGER,
    present BLOB NOT NULL,
    data_dirty INTEGER NOT NULL,
    meta_dirty INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deletes (key TEXT PRIMARY KEY, etag TEXT);
CREATE TABLE IF NOT EXISTS inflight (key TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS info (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS uploads (upload_id TEXT PRIMARY KEY, key TEXT NOT NULL);
";

impl StateDb {
    pub fn open(path: &Path) -> StateResult<StateDb> {
        // Never through a link planted at the file (the cache dir checks say so in a
        // sentence before this; here it is the last guard). SQLite's NOFOLLOW refuses a
        // link anywhere in the path, and the directories above may well be links (a
        // cache on another disk): it gets the path with those resolved.
        let path = match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => {
                std::fs::canonicalize(dir).map_err(io_error)?.join(name)
            }
            _ => path.to_path_buf(),
        };
        let path = path.as_path();
        let flags = rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(path, flags)?;
        // Only this daemon opens the state (the cache dir's lock says so): without
        // file locks and shared memory, a commit is a few syscalls fewer.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        // A daemon that handed this cache dir over can hold the database's lock for a
        // moment after it let go of the cache dir (a transfer outlived its shutdown and
        // its process is exiting): wait for that rather than fail the mount.
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // WAL + NORMAL: a commit survives a killed process; `sync_to_disk` makes it
        // survive a power loss too (fsync of a file asks for that).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        let journal = Journal::open(&path.with_extension("journal")).map_err(io_error)?;
        let mut inner = Inner {
            conn,
            journal: Some(journal),
        };
        // What the last run recorded after its last fold.
        inner.fold()?;
        Ok(StateDb {
            inner: Mutex::new(inner),
        })
    }

    pub fn in_memory() -> StateResult<StateDb> {
        let conn = Connection::open_in_memory()?;
        conn.execute_batch(SCHEMA)?;
        Ok(StateDb {
            inner: Mutex::new(Inner {
                conn,
                journal: None,
            }),
        })
    }

    /// The database with every journal record in it, for any other statement: the
    /// journal must only ever hold changes newer than the database.
    fn folded(&self) -> StateResult<MutexGuard<'_, Inner>> {
        let mut inner = self.inner.lock();
        inner.fold()?;
        Ok(inner)
    }

    /// Records an entry change in the journal, or in the database inside a batch
    /// (whose all-or-nothing the journal cannot give).
    fn change(&self, change: Change) -> StateResult<()> {
        let mut inner = self.inner.lock();
        let in_batch = !inner.conn.is_autocommit();
        if let Some(journal) = inner.journal.as_mut().filter(|_| !in_batch) {
            match journal.append(change.clone()) {
                Ok(()) => {
                    if journal.len() >= FOLD_AT {
                        inner.fold()?;
                    }
                    return Ok(());
                }
                // A full disk, say: the database says so itself if it cannot take it.
                Err(err) => tracing::warn!(%err, "cannot append to the state journal"),
            }
        }
        inner.fold()?;
        apply(&inner.conn, &change)
    }

    /// Groups the writes until the returned guard drops into one transaction, so a
    /// crash leaves all or none of them (a record and its pending delete, say).
    pub fn batch(&self) -> Batch<'_> {
        let mut inner = self.inner.lock();
        if !inner.conn.is_autocommit() {
            // Already inside a batch: the outer one commits.
            return Batch {
                db: self,
                open: false,
            };
        }
        let began = inner
            .fold()
            .and_then(|()| inner.conn.execute_batch("BEGIN IMMEDIATE"));
        drop(inner);
        if let Err(err) = &began {
            tracing::error!(%err, "cannot begin a state transaction");
        }
        Batch {
            db: self,
            open: began.is_ok(),
        }
    }

    pub fn put_entry(&self, r: &EntryRecord) -> StateResult<()> {
        self.change(Change::Put(r.clone()))
    }

    /// Runs one statement, parsed once per connection (the hot ones run per file).
    fn run(&self, sql: &str, params: impl rusqlite::Params) -> StateResult<usize> {
        self.folded()?.conn.prepare_cached(sql)?.execute(params)
    }

    pub fn remove_entry(&self, path: &str) -> StateResult<()> {
        self.change(Change::Remove(path.to_string()))
    }

    /// Queues the delete of `key`; with `etag`, only while the object is that version.
    pub fn put_delete(&self, key: &str, etag: Option<&str>) -> StateResult<()> {
        self.run(
            "INSERT OR REPLACE INTO deletes VALUES (?1, ?2)",
            params![key, etag],
        )?;
        Ok(())
    }

    pub fn remove_delete(&self, key: &str) -> StateResult<()> {
        self.run("DELETE FROM deletes WHERE key = ?1", params![key])?;
        Ok(())
    }

    /// Records that a write to `key` is about to start: if the process dies before
    /// its outcome is recorded, the next start checks whether anything owns `key`.
    pub fn put_inflight(&self, key: &str) -> StateResult<()> {
        self.run("INSERT OR IGNORE INTO inflight VALUES (?1)", params![key])?;
        Ok(())
    }

    pub fn remove_inflight(&self, key: &str) -> StateResult<()> {
        self.run("DELETE FROM inflight WHERE key = ?1", params![key])?;
        Ok(())
    }

    /// Writes that were under way when the previous process ended; clears the list.
    pub fn take_inflight(&self) -> StateResult<Vec<String>> {
        let inner = self.folded()?;
        let conn = &inner.conn;
        let keys = {
            let mut stmt = conn.prepare("SELECT key FROM inflight ORDER BY key")?;
            let rows = stmt.query_map([], |row| row.get(0))?;
            rows.collect::<StateResult<Vec<String>>>()?
        };
        conn.execute("DELETE FROM inflight", [])?;
        Ok(keys)
    }

    pub fn entries(&self) -> StateResult<Vec<EntryRecord>> {
        let inner = self.folded()?;
        let mut stmt = inner.conn.prepare("SELECT * FROM entries ORDER BY path")?;
        let rows = stmt.query_map([], |row| {
            let base_key: Option<String> = row.get(9)?;
            let base = match base_key {
                Some(key) => Some(BaseObject {
                    key,
                    etag: row.get::<_, Option<String>>(10)?.unwrap_or_default(),
                    size: row.get::<_, Option<i64>>(11)?.unwrap_or(0) as u64,
                }),
                None => None,
            };
            let kind = EntryKind::from_number(row.get(1)?).unwrap_or(EntryKind::File);
            Ok(EntryRecord {
                path: row.get(0)?,
                kind,
                cache_file: row.get(2)?,
                size: row.get::<_, i64>(3)? as u64,
                perm: row.get(4)?,
                uid: row.get(5)?,
                gid: row.get(6)?,
                mtime_ns: row.get(7)?,
                target: row.get(8)?,
                base,
                present: decode_ranges(&row.get::<_, Vec<u8>>(12)?),
                data_dirty: row.get(13)?,
                meta_dirty: row.get(14)?,
            })
        })?;
        rows.collect()
    }

    pub fn deletes(&self) -> StateResult<Vec<(String, Option<String>)>> {
        let inner = self.folded()?;
        let mut stmt = inner
            .conn
            .prepare("SELECT key, etag FROM deletes ORDER BY key")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect()
    }

    pub fn info(&self, name: &str) -> StateResult<Option<String>> {
        self.folded()?
            .conn
            .query_row(
                "SELECT value FROM info WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
    }

    pub fn set_info(&self, name: &str, value: &str) -> StateResult<()> {
        self.folded()?.conn.execute(
            "INSERT OR REPLACE INTO info VALUES (?1, ?2)",
            params![name, value],
        )?;
        Ok(())
    }

    /// Makes every commit so far durable against power loss.
    pub fn sync_to_disk(&self) -> StateResult<()> {
        self.folded()?
            .conn
            .query_row("PRAGMA wal_checkpoint(FULL)", [], |_| Ok(()))
    }
}

impl Drop for StateDb {
    /// A clean stop leaves everything in the database.
    fn drop(&mut self) {
        if let Err(err) = self.inner.get_mut().fold() {
            tracing::warn!(%err, "cannot fold the state journal; the next start does it");
        }
    }
}

/// An open transaction of the state; commits when dropped.
pub struct Batch<'a> {
    db: &'a StateDb,
    open: bool,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if self.open {
            if let Err(err) = self.db.inner.lock().conn.execute_batch("COMMIT") {
                tracing::error!(%err, "cannot commit a state transaction");
            }
        }
    }
}

fn encode_ranges(ranges: &[(u64, u64)]) -> Vec<u8> {
    ranges
        .iter()
        .flat_map(|(s, e)| s.to_le_bytes().into_iter().chain(e.to_le_bytes()))
        .collect()
}

fn decode_ranges(bytes: &[u8]) -> Vec<(u64, u64)> {
    bytes
        .chunks_exact(16)
        .map(|c| {
            let (s, e) = c.split_at(8);
            (
                u64::from_le_bytes(s.try_into().unwrap_or_default()),
                u64::from_le_bytes(e.try_into().unwrap_or_default()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn record(path: &str) -> EntryRecord {
        EntryRecord {
            path: path.into(),
            kind: EntryKind::File,
            cache_file: Some("0000000000000001".into()),
            size: 10,
            perm: 0o644,
            uid: 1,
            gid: 2,
            mtime_ns: 1_700_000_000_123_456_789,
            target: None,
            base: Some(BaseObject {
                key: "k".into(),
                etag: "\"e\"".into(),
                size: 20,
            }),
            present: vec![(0, 5), (8, u64::MAX)],
            data_dirty: true,
            meta_dirty: false,
        }
    }

    #[test]
    fn records_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let db = StateDb::open(&path).unwrap();
            db.put_entry(&record("a/b")).unwrap();
            db.put_entry(&record("gone")).unwrap();
            db.remove_entry("gone").unwrap();
            db.put_delete("old/key", Some("\"e1\"")).unwrap();
            db.put_delete("dropped", None).unwrap();
            db.remove_delete("dropped").unwrap();
            db.set_info("mounted", "yes").unwrap();
            db.put_inflight("half/written").unwrap();
        }
        let db = StateDb::open(&path).unwrap();
        assert_eq!(db.entries().unwrap(), vec![record("a/b")]);
        assert_eq!(
            db.deletes().unwrap(),
            vec![("old/key".to_string(), Some("\"e1\"".to_string()))]
        );
        assert_eq!(db.info("mounted").unwrap().as_deref(), Some("yes"));
        assert_eq!(
            db.take_inflight().unwrap(),
            vec!["half/written".to_string()]
        );
        assert!(db.take_inflight().unwrap().is_empty());
        db.sync_to_disk().unwrap();
    }

    #[test]
    fn a_batch_commits_once_and_nests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let db = StateDb::open(&path).unwrap();
        {
            let _outer = db.batch();
            db.put_delete("a", None).unwrap();
            {
                let _inner = db.batch();
                db.put_delete("b", None).unwrap();
            }
            // Still one open transaction after the inner batch ended.
            assert!(!db.inner.lock().conn.is_autocommit());
        }
        assert!(db.inner.lock().conn.is_autocommit());
        drop(db);
        assert_eq!(StateDb::open(&path).unwrap().deletes().unwrap().len(), 2);
    }

    #[test]
    fn the_journal_of_a_killed_run_is_replayed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let db = StateDb::open(&path).unwrap();
            db.put_entry(&record("old")).unwrap();
            db.put_entry(&record("removed")).unwrap();
        }
        // What a process killed before its next fold leaves behind.
        {
            let mut journal = Journal::open(&path.with_extension("journal")).unwrap();
            journal.append(Change::Remove("removed".into())).unwrap();
            journal.append(Change::Put(record("new"))).unwrap();
        }
        let db = StateDb::open(&path).unwrap();
        assert_eq!(db.entries().unwrap(), vec![record("new"), record("old")]);
        assert!(db.inner.lock().journal.as_ref().unwrap().is_empty());
    }

    #[test]
    fn entry_changes_go_to_the_journal_and_other_writes_fold_it_first() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("state.db")).unwrap();
        db.put_entry(&record("a")).unwrap();
        db.remove_entry("a").unwrap();
        db.put_entry(&record("b")).unwrap();
        let journaled = |db: &StateDb| db.inner.lock().journal.as_ref().unwrap().len();
        assert_eq!(journaled(&db), 3);
        db.put_delete("k", None).unwrap();
        assert_eq!(journaled(&db), 0);
        assert_eq!(db.entries().unwrap(), vec![record("b")]);
        {
            let _batch = db.batch();
            db.put_entry(&record("c")).unwrap();
            assert_eq!(journaled(&db), 0, "a batch writes the database itself");
        }
        for i in 0..FOLD_AT {
            db.put_entry(&record(&format!("many/{i}"))).unwrap();
        }
        assert!(journaled(&db) < FOLD_AT, "a long journal is folded");
        assert_eq!(db.entries().unwrap().len(), 2 + FOLD_AT);
    }

    #[test]
    fn replacing_a_record_keeps_one() {
        let db = StateDb::in_memory().unwrap();
        let mut r = record("f");
        db.put_entry(&r).unwrap();
        r.size = 99;
        r.base = None;
        db.put_entry(&r).unwrap();
        assert_eq!(db.entries().unwrap(), vec![r]);
    }
}
