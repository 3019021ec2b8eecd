//! Readers of two nodes sharing one cache bucket (`--cache-xz`), with and without a local
//! cache: what one node fetched, the other reads from the cache bucket, never the source;
//! a replaced object is never read from old blocks.

use std::sync::Arc;
use std::time::Duration;

use super::tests::{Fixture, MIB, cached_fixture, pattern, read_all, settle};
use crate::s3::in_memory::InMemoryStore;
use crate::shared_cache::{SharedCache, SharedCacheConfig};

/// A node: its own reader state and shared cache client, the given source and cache bucket.
fn node(source: &Arc<InMemoryStore>, bucket: &Arc<InMemoryStore>, max_object_size: u64) -> Fixture {
    let mut fx = Fixture::default_sizes();
    fx.store = source.clone();
    fx.shared = Some(shared(bucket, max_object_size));
    fx
}

fn shared(bucket: &Arc<InMemoryStore>, max_object_size: u64) -> Arc<SharedCache> {
    SharedCache::new(
        bucket.clone(),
        &SharedCacheConfig {
            bucket: "cache".into(),
            source_bucket: "source".into(),
            block_size: MIB,
            max_object_size,
            directory_bucket: false,
        },
    )
}

/// Waits until the cache bucket holds `blocks` blocks.
async fn puts_landed(bucket: &InMemoryStore, blocks: usize) {
    for _ in 0..500 {
        if bucket.tagged_keys().len() >= blocks {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "{} blocks in the cache bucket, not {blocks}",
        bucket.tagged_keys().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_reads_the_first_ones_blocks_not_the_source() {
    let (source, bucket) = (
        Arc::new(InMemoryStore::new()),
        Arc::new(InMemoryStore::new()),
    );
    let data = pattern((3 * MIB + 5) as usize, 21);
    source.put("shard", data.clone());
    let first = node(&source, &bucket, 64 * MIB);
    assert_eq!(
        read_all(&first.reader("shard").await, 128 * 1024).await,
        data
    );
    assert!(first.counters.snapshot().get_requests > 0);
    puts_landed(&bucket, 4).await;

    let second = node(&source, &bucket, 64 * MIB);
    assert_eq!(
        read_all(&second.reader("shard").await, 128 * 1024).await,
        data
    );
    let counts = second.counters.snapshot();
    assert_eq!(counts.get_requests, 0, "no GET of the source: {counts:?}");
    let shared = second.shared.as_ref().unwrap().counters().snapshot();
    assert_eq!((shared.hits, shared.hit_bytes), (4, 3 * MIB + 5));
    // Random small reads too: each a block from the cache bucket.
    let reader = second.reader("shard").await;
    let got = reader.read(2 * MIB + 100, 4096).await.unwrap();
    assert_eq!(
        &got[..],
        &data[(2 * MIB + 100) as usize..(2 * MIB + 4196) as usize]
    );
    assert_eq!(second.counters.snapshot().get_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_from_the_cache_bucket_land_on_the_local_disk() {
    let (source, bucket) = (
        Arc::new(InMemoryStore::new()),
        Arc::new(InMemoryStore::new()),
    );
    let data = pattern((2 * MIB) as usize, 22);
    source.put("k", data.clone());
    let first = node(&source, &bucket, 64 * MIB);
    read_all(&first.reader("k").await, 1 << 20).await;
    puts_landed(&bucket, 2).await;

    let tmp = tempfile::tempdir().unwrap();
    let mut second = cached_fixture(tmp.path());
    second.store = source.clone();
    second.shared = Some(shared(&bucket, 64 * MIB));
    assert_eq!(read_all(&second.reader("k").await, 1 << 20).await, data);
    settle(&second, 2).await;
    // The cache bucket emptied: the local disk serves the third read.
    for key in bucket.tagged_keys() {
        bucket.set_tagged(&key, None);
    }
    let gets_before = bucket.tagged_calls().0;
    assert_eq!(read_all(&second.reader("k").await, 1 << 20).await, data);
    assert_eq!(second.counters.snapshot().get_requests, 0, "not the source");
    assert_eq!(bucket.tagged_calls().0, gets_before, "not the cache bucket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_object_is_never_read_from_old_blocks() {
    let (source, bucket) = (
        Arc::new(InMemoryStore::new()),
        Arc::new(InMemoryStore::new()),
    );
    source.put("k", pattern((2 * MIB) as usize, 1));
    let first = node(&source, &bucket, 64 * MIB);
    read_all(&first.reader("k").await, 1 << 20).await;
    puts_landed(&bucket, 2).await;

    let new = pattern((2 * MIB) as usize, 2);
    source.put("k", new.clone());
    let second = node(&source, &bucket, 64 * MIB);
    assert_eq!(read_all(&second.reader("k").await, 1 << 20).await, new);
    assert!(second.counters.snapshot().get_requests > 0);
    assert_eq!(
        second.shared.as_ref().unwrap().counters().snapshot().hits,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_over_the_limit_go_to_the_source_only() {
    let (source, bucket) = (
        Arc::new(InMemoryStore::new()),
        Arc::new(InMemoryStore::new()),
    );
    let data = pattern((MIB + 1) as usize, 3);
    source.put("big", data.clone());
    // Mountpoint's default limit: 1 MiB.
    let first = node(&source, &bucket, MIB);
    assert_eq!(read_all(&first.reader("big").await, 1 << 20).await, data);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        bucket.tagged_calls(),
        (0, 0),
        "the cache bucket is not asked at all"
    );
}
