//! Reader behaviour on the in-memory store: bytes, amplification and the memory budget.

use std::sync::Arc;

use super::*;
use crate::memory::MemoryBudget;
use crate::s3::in_memory::InMemoryStore;

pub(super) const KIB: u64 = 1024;
pub(super) const MIB: u64 = 1024 * KIB;

pub(super) fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect()
}

/// A tiny deterministic generator for offsets and lengths.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}

pub(super) struct Fixture {
    pub(super) store: Arc<InMemoryStore>,
    pub(super) cache: Option<Arc<crate::cache::DiskCache>>,
    pub(super) shared: Option<Arc<crate::shared_cache::SharedCache>>,
    pub(super) budget: Arc<MemoryBudget>,
    pub(super) reads: Arc<MemoryBudget>,
    pub(super) counters: Arc<ReadCounters>,
    pub(super) config: PrefetchConfig,
}

impl Fixture {
    fn new(config: PrefetchConfig, budget: u64) -> Self {
        Self {
            store: Arc::new(InMemoryStore::new()),
            cache: None,
            shared: None,
            budget: MemoryBudget::new(budget),
            reads: MemoryBudget::new(budget / 8),
            counters: Arc::new(ReadCounters::default()),
            config,
        }
    }

    pub(super) fn default_sizes() -> Self {
        Self::new(PrefetchConfig::new(8 * MIB, 512 * MIB), 512 * MIB)
    }

    pub(super) async fn reader(&self, key: &str) -> FileReader<InMemoryStore> {
        let info = self.store.head(key).await.unwrap();
        FileReader::new(
            self.store.clone(),
            super::Caches {
                local: self.cache.clone(),
                shared: self.shared.clone(),
            },
            key.into(),
            info.etag,
            info.size,
            self.config,
            &Budgets {
                data: self.budget.clone(),
                reads: self.reads.clone(),
                gets: Arc::new(crate::throughput::GetSlots::unlimited()),
            },
            self.counters.clone(),
        )
    }
}

use crate::s3::ObjectStore;

pub(super) async fn read_all(reader: &FileReader<InMemoryStore>, chunk: u32) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let got = reader.read(out.len() as u64, chunk).await.unwrap();
        if got.is_empty() {
            return out;
        }
        out.extend_from_slice(&got);
    }
}

#[tokio::test]
async fn reads_any_offset_and_clamps_at_eof() {
    let fx = Fixture::default_sizes();
    let data = pattern(10_000, 1);
    fx.store.put("k", data.clone());
    let reader = fx.reader("k").await;
    for (offset, len) in [
        (0u64, 1u32),
        (0, 10_000),
        (9_999, 10),
        (5_000, 4096),
        (123, 0),
    ] {
        let got = reader.read(offset, len).await.unwrap();
        let end = (offset + u64::from(len)).min(10_000) as usize;
        assert_eq!(&got[..], &data[offset as usize..end], "at {offset}+{len}");
    }
    assert!(reader.read(10_000, 10).await.unwrap().is_empty());
    assert!(reader.read(50_000, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn boundary_sizes_read_whole_in_any_chunking() {
    let part = 256 * KIB;
    let config = PrefetchConfig {
        initial: 64 * KIB,
        part_size: part,
        max_part: part,
        max_window: 4 * part,
        keep_behind: 64 * KIB,
    };
    let fx = Fixture::new(config, 64 * MIB);
    for size in [0, 1, part - 1, part, part + 1, 3 * part + 17] {
        let data = pattern(size as usize, size as u32);
        fx.store.put("obj", data.clone());
        for chunk in [1000u32, 4096, 131_072, 1 << 20] {
            let reader = fx.reader("obj").await;
            assert_eq!(
                read_all(&reader, chunk).await,
                data,
                "size {size} chunk {chunk}"
            );
        }
    }
}

#[tokio::test]
async fn any_read_equals_a_slice_of_the_object() {
    let fx = Fixture::new(
        PrefetchConfig {
            initial: 16 * KIB,
            part_size: 64 * KIB,
            max_part: 64 * KIB,
            max_window: 256 * KIB,
            keep_behind: 32 * KIB,
        },
        MIB,
    );
    let data = pattern(777_777, 9);
    fx.store.put("k", data.clone());
    let reader = fx.reader("k").await;
    let mut rng = Lcg(42);
    let mut offset = 0u64;
    for _ in 0..2000 {
        // Mostly sequential with short skips, backward steps and far jumps mixed in.
        offset = match rng.below(10) {
            0 => rng.below(data.len() as u64 + 10),
            1 => offset.saturating_sub(rng.below(40_000)),
            2 => offset + rng.below(20_000),
            _ => offset,
        };
        let len = rng.below(140_000) as u32;
        let got = reader.read(offset, len).await.unwrap();
        let start = (offset as usize).min(data.len());
        let end = (offset as usize + len as usize).min(data.len());
        assert_eq!(&got[..], &data[start..end], "at {offset}+{len}");
        offset += got.len() as u64;
    }
}

#[tokio::test]
async fn sequential_reads_prefetch_in_growing_parts() {
    let fx = Fixture::default_sizes();
    let data = pattern((40 * MIB) as usize, 3);
    fx.store.put("big", data.clone());
    let reader = fx.reader("big").await;
    assert_eq!(read_all(&reader, 128 * 1024).await, data);
    let c = fx.counters.snapshot();
    assert_eq!(c.bytes_served, 40 * MIB);
    assert_eq!(
        c.bytes_fetched,
        40 * MIB,
        "sequential reads fetch each byte once"
    );
    // 1 + 2 + 4 + 8 + 8 + 8 + 8 + 1 MiB: a handful of GETs, not one per 128 KiB read.
    assert!(c.get_requests <= 10, "{c}");
    assert_eq!(c.prefetch_waste, 0);
}

#[tokio::test]
async fn long_streams_grow_parts_past_the_part_size() {
    let fx = Fixture::default_sizes();
    let data = pattern((200 * MIB) as usize, 9);
    fx.store.put("big", data.clone());
    let reader = fx.reader("big").await;
    assert_eq!(read_all(&reader, MIB as u32).await, data);
    let c = fx.counters.snapshot();
    assert_eq!(c.bytes_fetched, 200 * MIB, "{c}");
    // 8 MiB parts would take 30 GETs; parts growing to 32 MiB (a quarter of the window)
    // take about two thirds as many (the window grows no faster than twice what the run has
    // read).
    assert!(c.get_requests <= 20, "{c}");
    drop(reader);
    assert_eq!(fx.budget.used(), 0);
}

#[tokio::test]
async fn head_fetches_little() {
    let fx = Fixture::default_sizes();
    fx.store.put("big", pattern((64 * MIB) as usize, 4));
    let reader = fx.reader("big").await;
    let got = reader.read(0, 128 * 1024).await.unwrap();
    assert_eq!(got.len(), 128 * 1024);
    drop(reader);
    let c = fx.counters.snapshot();
    assert!(c.bytes_fetched <= 2 * MIB, "{c}");
    assert_eq!(fx.budget.used(), 0, "a closed reader holds no memory");
}

#[tokio::test]
async fn random_reads_fetch_what_they_need() {
    let fx = Fixture::default_sizes();
    let data = pattern((32 * MIB) as usize, 5);
    fx.store.put("big", data.clone());
    let reader = fx.reader("big").await;
    let mut rng = Lcg(7);
    for _ in 0..500 {
        let offset = rng.below(32 * MIB / 4096) * 4096;
        let got = reader.read(offset, 4096).await.unwrap();
        assert_eq!(&got[..], &data[offset as usize..offset as usize + 4096]);
    }
    let c = fx.counters.snapshot();
    assert!(c.bytes_fetched <= 4 * c.bytes_served, "{c}");
}

#[tokio::test]
async fn slightly_out_of_order_reads_stay_in_the_window() {
    let fx = Fixture::default_sizes();
    let data = pattern((16 * MIB) as usize, 6);
    fx.store.put("k", data.clone());
    let reader = fx.reader("k").await;
    let step = 128 * KIB;
    // The kernel's async readahead may deliver neighbouring requests swapped.
    let mut offsets = Vec::new();
    for pair in 0..(16 * MIB / step / 2) {
        offsets.push((2 * pair + 1) * step);
        offsets.push(2 * pair * step);
    }
    for offset in offsets {
        let got = reader.read(offset, step as u32).await.unwrap();
        assert_eq!(&got[..], &data[offset as usize..(offset + step) as usize]);
    }
    let c = fx.counters.snapshot();
    assert!(c.bytes_fetched <= 17 * MIB, "{c}");
}

/// A reader that reads runs and skips between them: 8 tensors of 2 MiB, one in every 16 MiB,
/// read through mmap (safetensors). The requests are the kernel's, as traced on a real
/// mount: each tensor's first fault reads around it (from 512 KiB before), then readahead
/// out of order. The skipped bytes between tensors are not fetched.
#[tokio::test]
async fn skipped_ranges_are_not_fetched() {
    let fx = Fixture::default_sizes();
    let data = pattern((128 * MIB) as usize, 8);
    fx.store.put("model", data.clone());
    let reader = fx.reader("model").await;
    let mut served = 0;
    // The header and the first tensor, from the start.
    for (offset, len) in [
        (0, MIB),
        (1_576_960, MIB),
        (MIB, 528_384),
        (2_625_536, 520_192),
    ] {
        let got = reader.read(offset, len as u32).await.unwrap();
        assert_eq!(&got[..], &data[offset as usize..(offset + len) as usize]);
        served += len;
    }
    for tensor in 1..8u64 {
        let s = tensor * 16 * MIB;
        for (offset, len) in [
            (s - 512 * KIB, MIB),
            (s + 1536 * KIB, MIB),
            (s + 512 * KIB, MIB - 4 * KIB),
            (s + 1536 * KIB - 4 * KIB, 4 * KIB),
            (s + 2560 * KIB, MIB - 4 * KIB),
        ] {
            let got = reader.read(offset, len as u32).await.unwrap();
            assert_eq!(&got[..], &data[offset as usize..(offset + len) as usize]);
            served += len;
        }
    }
    drop(reader);
    let c = fx.counters.snapshot();
    assert_eq!(c.bytes_served, served);
    assert!(c.bytes_fetched <= 3 * c.bytes_served, "{c}");
}

#[tokio::test]
async fn overwrite_under_handle_is_an_error_not_new_bytes() {
    let fx = Fixture::default_sizes();
    fx.store.put("k", vec![1u8; 100]);
    let reader = fx.reader("k").await;
    fx.store.put("k", vec![2u8; 100]);
    let err = reader.read(0, 10).await.unwrap_err();
    assert!(matches!(err, FsError::ObjectChanged { .. }));
    assert_eq!(err.errno(), libc::EIO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_refused_a_part_take_turns_in_the_reads_share() {
    // No room for parts at all: every read fetches its own bytes, from a share that holds
    // three of them; sixteen readers must take turns in it, and all get their bytes.
    let chunk = 128 * 1024;
    let mut fx = Fixture::new(PrefetchConfig::new(8 * MIB, 8 * MIB), 0);
    fx.reads = MemoryBudget::new(3 * chunk);
    let fx = Arc::new(fx);
    let mut tasks = Vec::new();
    for i in 0..16u32 {
        let fx = fx.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("obj{i}");
            let data = pattern(MIB as usize + i as usize, i);
            fx.store.put(&key, data.clone());
            let reader = fx.reader(&key).await;
            assert_eq!(read_all(&reader, chunk as u32).await, data, "reader {i}");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(fx.budget.peak(), 0, "no part fitted");
    let peak = fx.reads.peak();
    assert!(peak > 0 && peak <= 3 * chunk, "reads peak {peak}");
    assert_eq!(fx.reads.used(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn budget_holds_under_sixteen_readers() {
    let limit = 24 * MIB;
    let fx = Arc::new(Fixture::new(PrefetchConfig::new(8 * MIB, limit), limit));
    let mut tasks = Vec::new();
    for i in 0..16u32 {
        let fx = fx.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("obj{i}");
            let data = pattern((12 * MIB) as usize + i as usize, i);
            fx.store.put(&key, data.clone());
            let reader = fx.reader(&key).await;
            assert_eq!(read_all(&reader, 128 * 1024).await, data, "reader {i}");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert!(
        fx.budget.peak() <= limit,
        "peak {} > {limit}",
        fx.budget.peak()
    );
    assert!(fx.budget.peak() > 0, "readers did prefetch");
    assert_eq!(fx.budget.used(), 0);
}

#[test]
fn windows_are_shared_once_more_than_two_readers_stream() {
    let config = PrefetchConfig::new(8 * MIB, 512 * MIB);
    assert_eq!(config.max_window, 128 * MIB);
    let shares: Vec<u64> = [0, 1, 2, 3, 4, 8, 16, 64]
        .iter()
        .map(|&n| prefetch::window_share(&config, n) / MIB)
        .collect();
    assert_eq!(shares, [128, 128, 128, 85, 64, 32, 16, 16]);
}

#[tokio::test]
async fn streaming_readers_are_counted_until_they_jump_or_close() {
    let fx = Fixture::default_sizes();
    let mut readers = Vec::new();
    for i in 0..3u32 {
        let key = format!("s{i}");
        fx.store.put(&key, pattern((64 * MIB) as usize, i));
        let reader = fx.reader(&key).await;
        reader.read(0, 64 * 1024).await.unwrap();
        reader.read(64 * 1024, 64 * 1024).await.unwrap();
        readers.push(reader);
    }
    assert_eq!(fx.budget.streams(), 3);
    // A far jump: that reader fetches exactly what it asks for, nothing queued.
    readers[0].read(60 * MIB, 4096).await.unwrap();
    assert_eq!(fx.budget.streams(), 2);
    readers.clear();
    assert_eq!(fx.budget.streams(), 0);
    assert_eq!(fx.budget.used(), 0);
}

pub(super) fn cached_fixture(dir: &std::path::Path) -> Fixture {
    let mut fx = Fixture::default_sizes();
    let cache = crate::cache::DiskCache::open(crate::cache::CacheConfig {
        dir: dir.to_path_buf(),
        block_size: MIB,
        max_bytes: Some(64 * MIB),
        bucket: "b".into(),
    })
    .unwrap();
    fx.cache = Some(Arc::new(cache));
    fx
}

/// Waits for the background cache writes of a read to land (in place, not only reserved:
/// counting reservations let a read race the blocks it meant to find).
pub(super) async fn settle(fx: &Fixture, blocks: u64) {
    for _ in 0..200 {
        if fx.cache.as_ref().unwrap().stored() >= blocks * MIB {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("cache writes did not land");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_read_comes_from_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = cached_fixture(tmp.path());
    let data = pattern((10 * MIB + 123) as usize, 11);
    fx.store.put("k", data.clone());
    assert_eq!(read_all(&fx.reader("k").await, 128 * 1024).await, data);
    settle(&fx, 10).await;
    let before = fx.counters.snapshot();
    assert_eq!(read_all(&fx.reader("k").await, 128 * 1024).await, data);
    let after = fx.counters.snapshot();
    assert_eq!(
        after.get_requests, before.get_requests,
        "no GET on the second read"
    );
    assert_eq!(after.bytes_fetched, before.bytes_fetched);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partly_cached_reads_fetch_only_the_missing_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = cached_fixture(tmp.path());
    let data = pattern((8 * MIB) as usize, 12);
    fx.store.put("k", data.clone());
    let reader = fx.reader("k").await;
    // Random (unprefetched) reads of blocks 2 and 5.
    for block in [2u64, 5] {
        let got = reader.read(block * MIB + 10, 100).await.unwrap();
        assert_eq!(
            &got[..],
            &data[(block * MIB + 10) as usize..(block * MIB + 110) as usize]
        );
    }
    settle(&fx, 2).await;
    let before = fx.counters.snapshot();
    let reader = fx.reader("k").await;
    let got = reader.read(MIB, (5 * MIB) as u32).await.unwrap();
    assert_eq!(&got[..], &data[MIB as usize..(6 * MIB) as usize]);
    let after = fx.counters.snapshot();
    // Blocks 1, 3 and 4 were missing: two GETs, 3 MiB.
    assert_eq!(after.bytes_fetched - before.bytes_fetched, 3 * MIB);
    assert_eq!(after.get_requests - before.get_requests, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_object_never_reads_old_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = cached_fixture(tmp.path());
    fx.store.put("k", pattern((3 * MIB) as usize, 1));
    read_all(&fx.reader("k").await, 1 << 20).await;
    settle(&fx, 3).await;
    let new = pattern((3 * MIB) as usize, 2);
    fx.store.put("k", new.clone());
    assert_eq!(read_all(&fx.reader("k").await, 1 << 20).await, new);
}

proptest::proptest! {
    #![proptest_config(crate::testing::fuzz_config())]
    /// Offsets and lengths come from the kernel: any of them gives the object's bytes there
    /// (fewer at its end, none past it), through prefetch and the cache alike, never a panic.
    #[test]
    fn untrusted_read_offsets_and_lengths_give_the_objects_bytes(
        size in 0usize..300_000,
        reads in proptest::collection::vec(
            (proptest::prop_oneof![0u64..400_000, proptest::prelude::any::<u64>()],
             proptest::prop_oneof![0u32..200_000, proptest::prelude::any::<u32>()]),
            1..12),
        cached in proptest::prelude::any::<bool>(),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        runtime.block_on(async {
            let mut fixture = Fixture::new(PrefetchConfig::new(5 * MIB, 64 * MIB), 64 * MIB);
            if cached {
                let config = crate::cache::CacheConfig {
                    dir: tmp.path().to_path_buf(),
                    block_size: 64 * 1024,
                    max_bytes: Some(64 * MIB),
                    bucket: "b".into(),
                };
                fixture.cache = Some(Arc::new(crate::cache::DiskCache::open(config).unwrap()));
            }
            let data = pattern(size, 7);
            fixture.store.put("k", data.clone());
            let reader = fixture.reader("k").await;
            for (offset, len) in reads {
                let got = reader.read(offset, len).await.unwrap();
                let start = offset.min(size as u64) as usize;
                let end = offset.saturating_add(u64::from(len)).min(size as u64) as usize;
                assert_eq!(got.as_ref(), &data[start..end.max(start)], "read of {len} at {offset}");
            }
        });
    }
}
