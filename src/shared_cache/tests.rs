//! The shared cache against an in-memory cache bucket, and against one that fails or hangs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::s3::in_memory::InMemoryStore;
use crate::s3::{S3Error, StoreFuture, TaggedObject, TaggedPut};

const ETAG: &str = "\"v1\"";

fn config(max_object_size: u64) -> SharedCacheConfig {
    SharedCacheConfig {
        bucket: "cache".into(),
        source_bucket: "source".into(),
        block_size: 16,
        max_object_size,
        directory_bucket: false,
    }
}

/// Waits until `done`, giving the background writes their turn.
async fn settle(done: impl Fn() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("background writes did not settle");
}

#[tokio::test]
async fn a_block_written_by_one_node_is_read_by_another() {
    let bucket = Arc::new(InMemoryStore::new());
    let writer = SharedCache::new(bucket.clone(), &config(1 << 20));
    let reader = SharedCache::new(bucket.clone(), &config(1 << 20));
    assert_eq!(reader.get("k", ETAG, 40, 1).await, None, "empty bucket");
    assert_eq!(reader.counters().snapshot().misses, 1);

    // An object of 40 bytes: blocks of 16, 16 and 8.
    writer.put("k", ETAG, 40, 1, Bytes::from_static(b"0123456789abcdef"));
    writer.put("k", ETAG, 40, 2, Bytes::from_static(b"tail...."));
    settle(|| writer.counters().snapshot().puts == 2).await;
    let layout = Layout::new("source", 16);
    assert_eq!(
        bucket.tagged_keys(),
        vec![
            layout.block_key("k", ETAG, 1),
            layout.block_key("k", ETAG, 2)
        ]
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    assert_eq!(
        reader.get("k", ETAG, 40, 1).await.as_deref(),
        Some(&b"0123456789abcdef"[..])
    );
    assert_eq!(
        reader.get("k", ETAG, 40, 2).await.as_deref(),
        Some(&b"tail...."[..])
    );
    // Another version of the object, or another size: never those blocks.
    assert_eq!(reader.get("k", "\"v2\"", 40, 1).await, None);
    assert_eq!(
        reader.get("k", ETAG, 48, 2).await,
        None,
        "block 2 of 48 bytes is 16 long"
    );
    let counts = reader.counters().snapshot();
    assert_eq!((counts.hits, counts.hit_bytes, counts.rejects), (2, 24, 1));
}

#[tokio::test]
async fn altered_blocks_are_rejected_not_served() {
    let bucket = Arc::new(InMemoryStore::new());
    let cache = SharedCache::new(bucket.clone(), &config(1 << 20));
    cache.put("k", ETAG, 16, 0, Bytes::from_static(b"0123456789abcdef"));
    settle(|| cache.counters().snapshot().puts == 1).await;
    let key = Layout::new("source", 16).block_key("k", ETAG, 0);
    let good = bucket.tagged(&key).unwrap();

    // Data rewritten (with a checksum of its own, as a PUT by someone else would have).
    let mut altered = good.clone();
    altered.data = Bytes::from_static(b"0123456789abcdeX");
    altered.crc32c = Some(format::crc32c_header(crc32c::crc32c(&altered.data)));
    bucket.set_tagged(&key, Some(altered));
    assert_eq!(cache.get("k", ETAG, 16, 0).await, None);
    // A metadata field changed.
    let mut header = good.clone();
    header
        .metadata
        .insert("source-bucket-name".into(), "elsewhere".into());
    bucket.set_tagged(&key, Some(header));
    assert_eq!(cache.get("k", ETAG, 16, 0).await, None);
    assert_eq!(cache.counters().snapshot().rejects, 2);
    // Put back, it serves again (a rejected block is not a failure of the bucket).
    bucket.set_tagged(&key, Some(good));
    assert!(cache.get("k", ETAG, 16, 0).await.is_some());
    assert_eq!(cache.counters().snapshot().errors, 0);
}

#[tokio::test]
async fn objects_over_the_limit_are_not_shared() {
    let bucket = Arc::new(InMemoryStore::new());
    let cache = SharedCache::new(bucket.clone(), &config(32));
    assert!(cache.covers(32) && !cache.covers(33) && !cache.covers(0));
    cache.put("big", ETAG, 33, 0, Bytes::from_static(b"0123456789abcdef"));
    assert_eq!(cache.get("big", ETAG, 33, 0).await, None);
    // A block of the wrong length for its object is not written either.
    cache.put("k", ETAG, 20, 0, Bytes::from_static(b"0123"));
    tokio::task::yield_now().await;
    assert_eq!(bucket.tagged_calls(), (0, 0), "no request at all");
}

/// A cache bucket that fails every request (or never answers), counting them.
#[derive(Debug, Default)]
struct Broken {
    hang: bool,
    calls: AtomicU64,
}

impl BlockStore for Broken {
    fn put_tagged(&self, _key: &str, _data: Bytes, _put: TaggedPut) -> StoreFuture<'_, ()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let hang = self.hang;
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Err(S3Error::AccessDenied("no writes here".into()))
        })
    }

    fn get_tagged(&self, _key: &str) -> StoreFuture<'_, Option<TaggedObject>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let hang = self.hang;
        Box::pin(async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Err(S3Error::Network("unreachable".into()))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_bucket_is_left_alone_for_a_while() {
    let broken = Arc::new(Broken::default());
    let cache = SharedCache::new(broken.clone(), &config(1 << 20));
    assert_eq!(cache.get("k", ETAG, 16, 0).await, None);
    assert_eq!(cache.get("k", ETAG, 16, 1).await, None);
    assert_eq!(
        broken.calls.load(Ordering::SeqCst),
        1,
        "reads paused after one failure"
    );
    cache.put("k", ETAG, 16, 0, Bytes::from_static(b"0123456789abcdef"));
    settle(|| cache.counters().snapshot().put_errors == 1).await;
    cache.put("k", ETAG, 16, 0, Bytes::from_static(b"0123456789abcdef"));
    tokio::task::yield_now().await;
    assert_eq!(
        broken.calls.load(Ordering::SeqCst),
        2,
        "writes paused after one failure"
    );
    // After the pause, the bucket is tried again.
    tokio::time::advance(READ_PAUSE + Duration::from_secs(1)).await;
    assert_eq!(cache.get("k", ETAG, 16, 0).await, None);
    assert_eq!(broken.calls.load(Ordering::SeqCst), 3);
    let counts = cache.counters().snapshot();
    assert_eq!((counts.errors, counts.put_errors, counts.hits), (2, 1, 0));
    assert!(cache.warned.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn a_bucket_that_never_answers_costs_a_read_the_timeout_once() {
    let hung = Arc::new(Broken {
        hang: true,
        ..Broken::default()
    });
    let cache = SharedCache::new(hung.clone(), &config(1 << 20));
    let started = tokio::time::Instant::now();
    assert_eq!(cache.get("k", ETAG, 16, 0).await, None);
    assert_eq!(started.elapsed(), GET_TIMEOUT);
    assert_eq!(cache.get("k", ETAG, 16, 0).await, None);
    assert_eq!(
        started.elapsed(),
        GET_TIMEOUT,
        "the second read does not wait"
    );
}

#[tokio::test(start_paused = true)]
async fn writes_past_the_queue_are_dropped_not_waited_for() {
    let hung = Arc::new(Broken {
        hang: true,
        ..Broken::default()
    });
    let mut config = config(u64::MAX);
    config.block_size = 1024 * 1024;
    let cache = SharedCache::new(hung.clone(), &config);
    let block = Bytes::from(vec![7u8; 1024 * 1024]);
    let blocks = WRITE_QUEUE_BYTES / (1024 * 1024);
    for index in 0..blocks + 3 {
        cache.put("k", ETAG, 1 << 40, index, block.clone());
    }
    assert_eq!(
        cache.counters().snapshot().skipped_bytes,
        3 * 1024 * 1024,
        "the queue holds {blocks} blocks, the rest are dropped at once"
    );
    tokio::task::yield_now().await;
    assert_eq!(
        hung.calls.load(Ordering::SeqCst),
        PUTS_IN_FLIGHT as u64,
        "at most {PUTS_IN_FLIGHT} PUTs at once"
    );
}

#[tokio::test]
async fn the_probe_is_written_with_the_layout() {
    let bucket = Arc::new(InMemoryStore::new());
    let cache = SharedCache::new(bucket.clone(), &config(1 << 20));
    cache.probe(&tokio::runtime::Handle::current());
    let (key, body) = Layout::new("source", 16).probe();
    settle(|| bucket.tagged(&key).is_some()).await;
    assert_eq!(bucket.tagged(&key).unwrap().data, Bytes::from(body));
}
