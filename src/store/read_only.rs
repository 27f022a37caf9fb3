//! The store of a read-only mount: reads pass through, every write is refused here,
//! before any request is made. The mount runs no uploader and no probe either; this
//! is the guarantee that nothing added later can write to the bucket by mistake.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    CompletedPart, FileRange, Listing, Metadata, ObjectInfo, ObjectStore, PieceSink, StoreError,
    StoreResult, StoreStats, WriteCondition,
};

pub struct ReadOnly(pub Arc<dyn ObjectStore>);

fn refused(key: &str) -> StoreError {
    StoreError::Other(format!(
        "{key}: not written, the mount is read-only (mount it without ro to write)"
    ))
}

#[async_trait]
impl ObjectStore for ReadOnly {
    async fn list(&self, prefix: &str, delimiter: Option<&str>) -> StoreResult<Listing> {
        self.0.list(prefix, delimiter).await
    }
    async fn head(&self, key: &str) -> StoreResult<ObjectInfo> {
        self.0.head(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> StoreResult<Bytes> {
        self.0.get_range(key, range).await
    }
    async fn get_range_into(
        &self,
        key: &str,
        range: Range<u64>,
        etag: &str,
        sink: &PieceSink<'_>,
    ) -> StoreResult<u64> {
        self.0.get_range_into(key, range, etag, sink).await
    }
    async fn get(&self, key: &str) -> StoreResult<Bytes> {
        self.0.get(key).await
    }
    async fn put(
        &self,
        key: &str,
        _: Bytes,
        _: &Metadata,
        _: &WriteCondition,
    ) -> StoreResult<String> {
        Err(refused(key))
    }
    async fn put_file(
        &self,
        key: &str,
        _: &Path,
        _: u64,
        _: &Metadata,
        _: &WriteCondition,
    ) -> StoreResult<String> {
        Err(refused(key))
    }
    async fn create_multipart(&self, key: &str, _: &Metadata) -> StoreResult<String> {
        Err(refused(key))
    }
    async fn upload_part(
        &self,
        key: &str,
        _: &str,
        _: u32,
        _: FileRange<'_>,
    ) -> StoreResult<CompletedPart> {
        Err(refused(key))
    }
    async fn complete_multipart(
        &self,
        key: &str,
        _: &str,
        _: Vec<CompletedPart>,
        _: &WriteCondition,
    ) -> StoreResult<String> {
        Err(refused(key))
    }
    async fn abort_multipart(&self, key: &str, _: &str) -> StoreResult<()> {
        Err(refused(key))
    }
    async fn copy(&self, _: &str, _: &str, to: &str, _: Option<&Metadata>) -> StoreResult<String> {
        Err(refused(to))
    }
    async fn delete(&self, key: &str) -> StoreResult<()> {
        Err(refused(key))
    }
    async fn check_access(&self) -> StoreResult<()> {
        self.0.check_access().await
    }
    fn stats(&self) -> &StoreStats {
        self.0.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn reads_pass_and_writes_are_refused_without_a_request() {
        let inner = Arc::new(MemoryStore::new());
        inner.insert("a", b"bytes", Metadata::new());
        let store = ReadOnly(inner.clone());
        assert_eq!(&store.get("a").await.unwrap()[..], b"bytes");
        let none = Metadata::new();
        let put = store.put("b", Bytes::new(), &none, &WriteCondition::Always);
        assert!(put.await.unwrap_err().to_string().contains("read-only"));
        assert!(store.delete("a").await.is_err());
        assert!(store.copy("a", "", "c", None).await.is_err());
        assert!(store.create_multipart("d", &none).await.is_err());
        let listed = inner.list("", None).await.unwrap();
        let keys: Vec<&str> = listed.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["a"], "nothing was written or removed");
    }
}
