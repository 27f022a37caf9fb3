//! Multipart uploads this cache started while a file was still being written: a
//! daemon killed before their complete or abort leaves them open in the bucket,
//! where they cost storage until aborted. Only the ones recorded here are ever
//! aborted: other clients' uploads under the same prefix are none of ours.

use rusqlite::params;

use super::{StateDb, StateResult};

impl StateDb {
    /// Records an upload as soon as the bucket named it, before any part goes.
    pub fn put_upload(&self, upload_id: &str, key: &str) -> StateResult<()> {
        self.run(
            "INSERT OR REPLACE INTO uploads VALUES (?1, ?2)",
            params![upload_id, key],
        )?;
        Ok(())
    }

    /// The upload was completed or aborted.
    pub fn remove_upload(&self, upload_id: &str) -> StateResult<()> {
        self.run(
            "DELETE FROM uploads WHERE upload_id = ?1",
            params![upload_id],
        )?;
        Ok(())
    }

    /// Uploads recorded and never finished: (upload id, key).
    pub fn uploads(&self) -> StateResult<Vec<(String, String)>> {
        let inner = self.folded()?;
        let mut stmt = inner
            .conn
            .prepare("SELECT upload_id, key FROM uploads ORDER BY key")?;
        let rows = stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::state::StateDb;

    #[test]
    fn uploads_survive_a_restart_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let db = StateDb::open(&path).unwrap();
            db.put_upload("u1", "big/file").unwrap();
            db.put_upload("u2", "other").unwrap();
            db.remove_upload("u2").unwrap();
        }
        let db = StateDb::open(&path).unwrap();
        assert_eq!(
            db.uploads().unwrap(),
            vec![("u1".to_string(), "big/file".to_string())]
        );
        db.remove_upload("u1").unwrap();
        assert!(db.uploads().unwrap().is_empty());
    }
}
