//! The cache on a real temporary directory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::store::direct_ok;
use super::*;
use crate::memory::page_aligned;

/// `len` page-aligned bytes made by `byte(i)`.
fn aligned_bytes(len: usize, byte: impl Fn(usize) -> u8) -> bytes::BytesMut {
    let mut memory = page_aligned(len);
    memory.extend((0..len).map(byte));
    memory
}

fn config(dir: &Path, max: Option<u64>) -> CacheConfig {
    CacheConfig {
        dir: dir.to_path_buf(),
        block_size: 4096,
        max_bytes: max,
        bucket: "bucket".into(),
    }
}

fn block_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for shard in fs::read_dir(dir.join(SUBDIR).join("blocks"))
        .unwrap()
        .flatten()
    {
        for entry in fs::read_dir(shard.path()).unwrap().flatten() {
            out.push(entry.path());
        }
    }
    out
}

/// Bytes the disk gives the files at `paths` (allocated blocks: what the bound counts).
fn bytes_of(paths: &[PathBuf]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    paths
        .iter()
        .map(|p| fs::metadata(p).unwrap().blocks() * 512)
        .sum()
}

fn dir_bytes(dir: &Path) -> u64 {
    bytes_of(&block_files(dir))
}

#[test]
fn blocks_round_trip_by_key_etag_and_index() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = DiskCache::open(config(tmp.path(), Some(1 << 20))).unwrap();
    // An object of 4096 + 6 bytes: a whole block, then a short last one.
    let size = 4096 + 6;
    let first = [1u8; 4096];
    cache.put("k", "\"e1\"", 0, &first);
    cache.put("k", "\"e1\"", 1, b"second");
    assert_eq!(cache.get("k", "\"e1\"", size, 0).unwrap().as_ref(), &first);
    assert_eq!(
        cache.get("k", "\"e1\"", size, 1).unwrap().as_ref(),
        b"second"
    );
    assert!(
        cache.get("k", "\"e2\"", size, 0).is_none(),
        "another ETag is another object"
    );
    assert!(cache.get("other", "\"e1\"", size, 0).is_none());
    assert!(cache.get("k", "\"e1\"", size, 2).is_none(), "past the end");
    assert!(
        cache.get("k", "\"e1\"", size + 1, 1).is_none(),
        "a block that is not the object's length there is not its block"
    );
}

#[test]
fn a_flipped_byte_is_never_served_and_the_block_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = DiskCache::open(config(tmp.path(), Some(1 << 20))).unwrap();
    cache.put("k", "e", 0, &[7u8; 4096]);
    let files = block_files(tmp.path());
    assert_eq!(files.len(), 1);
    let mut bytes = fs::read(&files[0]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&files[0], bytes).unwrap();
    assert!(cache.get("k", "e", 4096, 0).is_none());
    assert!(!files[0].exists(), "the corrupt block was deleted");
    assert_eq!(cache.counters.rejected.load(Ordering::Relaxed), 1);
    cache.put("k", "e", 0, &[7u8; 4096]);
    assert_eq!(cache.get("k", "e", 4096, 0).unwrap().as_ref(), &[7u8; 4096]);
}

#[test]
fn a_block_truncated_after_its_header_was_read_is_rejected_not_served_short() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), Some(1 << 20));
    cfg.block_size = 4 * 4096;
    let cache = DiskCache::open(cfg).unwrap();
    let data: Vec<u8> = (0..4 * 4096).map(|i| (i * 13 % 256) as u8).collect();
    let size = 4 * 4096;
    cache.put("k", "e", 0, &data);
    // The header is read and remembered here.
    assert_eq!(
        cache.read("k", "e", size, 0, 0..100).unwrap().as_ref(),
        &data[..100]
    );
    let files = block_files(tmp.path());
    let file = fs::OpenOptions::new().write(true).open(&files[0]).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len - 4096 - 10).unwrap();
    assert!(cache.read("k", "e", size, 0, 0..size as usize).is_none());
    assert!(!files[0].exists(), "the truncated block was deleted");
}

/// Bytes on disk of one 4096-byte block of key "k", ETag "e".
fn one_block_file() -> u64 {
    let tmp = tempfile::tempdir().unwrap();
    let cache = DiskCache::open(config(tmp.path(), Some(1 << 20))).unwrap();
    cache.put("k", "e", 0, &[0u8; 4096]);
    cache.used()
}

#[test]
fn a_range_reads_only_its_chunks_and_a_bad_chunk_is_never_served() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), Some(1 << 20));
    cfg.block_size = 4 * 4096;
    let cache = DiskCache::open(cfg).unwrap();
    let data: Vec<u8> = (0..4 * 4096).map(|i| (i * 7 % 256) as u8).collect();
    cache.put("k", "e", 2, &data);
    let got = cache.read("k", "e", 3 * 4 * 4096, 2, 5000..5100).unwrap();
    assert_eq!(got.as_ref(), &data[5000..5100]);
    assert_eq!(
        cache.read("k", "e", 3 * 4 * 4096, 2, 0..0).unwrap().len(),
        0
    );
    assert!(
        cache
            .read("k", "e", 3 * 4 * 4096, 2, 0..4 * 4096 + 1)
            .is_none(),
        "a block shorter than asked is not the block asked for"
    );
    cache.put("k", "e", 2, &data);
    // Corrupt the last chunk on disk: the header is remembered, so the damage is found
    // by the chunk's own checksum when that chunk is read.
    let files = block_files(tmp.path());
    let mut bytes = fs::read(&files[0]).unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 0x80;
    fs::write(&files[0], bytes).unwrap();
    assert_eq!(
        cache
            .read("k", "e", 3 * 4 * 4096, 2, 0..4096)
            .unwrap()
            .as_ref(),
        &data[..4096],
        "an intact chunk is still good"
    );
    assert!(
        cache
            .read("k", "e", 3 * 4 * 4096, 2, 3 * 4096..4 * 4096 - 1)
            .is_none()
    );
    assert!(!files[0].exists(), "the corrupt block was deleted");
    assert_eq!(cache.counters.rejected.load(Ordering::Relaxed), 2);
}

#[test]
fn the_bound_holds_after_every_put() {
    let tmp = tempfile::tempdir().unwrap();
    let max = 10 * one_block_file() + 100;
    let cache = DiskCache::open(config(tmp.path(), Some(max))).unwrap();
    for i in 0..100 {
        cache.put("k", "e", i, &[i as u8; 4096]);
        assert!(cache.used() <= max);
        assert!(dir_bytes(tmp.path()) <= max, "after block {i}");
    }
    // The most recent blocks survive; the oldest were evicted.
    assert!(cache.get("k", "e", 1 << 30, 99).is_some());
    assert!(cache.get("k", "e", 1 << 30, 0).is_none());
    assert!(cache.counters.evicted.load(Ordering::Relaxed) >= 90);
}

#[test]
fn blocks_survive_a_reopen_and_the_directory_is_locked_meanwhile() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let cache = DiskCache::open(config(tmp.path(), Some(1 << 20))).unwrap();
        cache.put("k", "e", 3, b"kept");
        let second = DiskCache::open(config(tmp.path(), Some(1 << 20)));
        let err = second.unwrap_err().to_string();
        assert!(err.contains("in use") && !err.contains('\n'), "{err}");
    }
    let cache = DiskCache::open(config(tmp.path(), Some(1 << 20))).unwrap();
    assert_eq!(
        cache.get("k", "e", 3 * 4096 + 4, 3).unwrap().as_ref(),
        b"kept"
    );
    assert!(cache.used() > 0);
}

#[test]
fn a_smaller_bound_at_reopen_evicts_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let cache = DiskCache::open(config(tmp.path(), Some(1 << 20))).unwrap();
        for i in 0..20 {
            cache.put("k", "e", i, &[1u8; 4096]);
        }
    }
    let max = 5 * one_block_file() + 100;
    let cache = DiskCache::open(config(tmp.path(), Some(max))).unwrap();
    assert!(dir_bytes(tmp.path()) <= max);
    assert!(cache.used() <= max);
    assert!(cache.used() > 0, "the newest blocks are kept");
}

#[test]
fn an_unwritable_cache_only_misses() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = DiskCache::open(config(tmp.path(), Some(1 << 20))).unwrap();
    fs::remove_dir_all(tmp.path().join(SUBDIR).join("tmp")).unwrap();
    cache.put("k", "e", 0, b"lost");
    assert!(cache.get("k", "e", 4, 0).is_none());
    assert_eq!(cache.used(), 0, "a failed write is not counted");
}

#[test]
fn default_bound_leaves_free_space() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = DiskCache::open(config(tmp.path(), None)).unwrap();
    assert!(cache.max_bytes() > 0);
}

/// An object of `len` bytes cached block by block (4 KiB blocks).
fn cache_object(cache: &DiskCache, len: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    for (index, block) in data.chunks(4096).enumerate() {
        cache.put("k", "e", index as u64, block);
    }
    data
}

fn object_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir.join(SUBDIR).join("objects"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    out
}

#[test]
fn a_complete_object_becomes_one_whole_copy_that_serves_every_range() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = DiskCache::open(config(tmp.path(), Some(1 << 20))).unwrap();
    let len = 3 * 4096 + 100;
    let data = cache_object(&cache, len - 100);
    assert!(
        !cache.build_whole("k", "e", len as u64),
        "a block is missing: no copy"
    );
    let data = {
        let mut all = data;
        all.extend((len - 100..len).map(|i| (i * 31 % 251) as u8));
        cache.put("k", "e", 3, &all[3 * 4096..]);
        all
    };
    assert!(cache.is_complete("k", "e", len as u64));
    assert!(cache.build_whole("k", "e", len as u64));
    assert!(!cache.build_whole("k", "e", len as u64), "built once");
    assert!(block_files(tmp.path()).is_empty(), "the blocks are gone");
    let files = object_files(tmp.path());
    assert_eq!(files.len(), 2, "data file and sidecar: {files:?}");
    assert_eq!(fs::read(&files[0]).unwrap(), data, "byte n at offset n");
    assert_eq!(cache.used(), bytes_of(&files));
    for (index, within) in [(0, 0..4096), (1, 10..20), (3, 0..100), (2, 4000..4096)] {
        let at = index as usize * 4096;
        let got = cache
            .read("k", "e", len as u64, index, within.clone())
            .unwrap();
        assert_eq!(got.as_ref(), &data[at + within.start..at + within.end]);
    }
    assert_eq!(
        cache.get("k", "e", len as u64, 3).unwrap().as_ref(),
        &data[3 * 4096..]
    );
    assert!(
        cache.read("k", "e", len as u64, 3, 0..101).is_none(),
        "past the object"
    );
    // A new read of the object does not bring blocks back.
    cache.put("k", "e", 0, &data[..4096]);
    assert!(block_files(tmp.path()).is_empty());
    let mut handed = Vec::new();
    std::io::Read::read_to_end(&mut cache.whole_file("k", "e").unwrap(), &mut handed).unwrap();
    assert_eq!(handed, data);
    assert!(cache.whole_file("k", "other-etag").is_none());
}

#[test]
fn a_whole_copy_survives_a_reopen_but_not_a_change_to_its_data_file() {
    let tmp = tempfile::tempdir().unwrap();
    let len = 2 * 4096;
    let data = {
        let cache = DiskCache::open(config(tmp.path(), Some(1 << 20))).unwrap();
        let data = cache_object(&cache, len);
        assert!(cache.build_whole("k", "e", len as u64));
        data
    };
    let cache = DiskCache::open(config(tmp.path(), Some(1 << 20))).unwrap();
    assert!(
        cache.whole_file("k", "e").is_some(),
        "reused after a reopen"
    );
    // Rewriting the same bytes changes the file's change time: never handed to the kernel.
    let path = &object_files(tmp.path())[0];
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(path, &data).unwrap();
    assert!(cache.whole_file("k", "e").is_none());
    assert!(object_files(tmp.path()).is_empty(), "dropped");
    assert_eq!(cache.used(), 0);
}

#[test]
fn a_flipped_byte_in_a_whole_copy_is_never_served() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = DiskCache::open(config(tmp.path(), Some(1 << 20))).unwrap();
    let data = cache_object(&cache, 3 * 4096);
    assert!(cache.build_whole("k", "e", data.len() as u64));
    let path = object_files(tmp.path())[0].clone();
    let mut bytes = fs::read(&path).unwrap();
    bytes[4096 + 7] ^= 1;
    fs::write(&path, bytes).unwrap();
    assert_eq!(
        cache.read("k", "e", 3 * 4096, 0, 0..4096).unwrap().as_ref(),
        &data[..4096]
    );
    assert!(cache.read("k", "e", 3 * 4096, 1, 0..10).is_none());
    assert!(
        object_files(tmp.path()).is_empty(),
        "the bad copy was deleted"
    );
    assert!(
        cache.read("k", "e", 3 * 4096, 0, 0..10).is_none(),
        "nothing left to serve"
    );
}

#[test]
fn whole_copies_count_against_the_bound_and_are_evicted_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let max = 12 * one_block_file();
    let cache = DiskCache::open(config(tmp.path(), Some(max))).unwrap();
    let data = cache_object(&cache, 4 * 4096);
    assert!(cache.build_whole("k", "e", data.len() as u64));
    for i in 0..40 {
        cache.put("other", "e", i, &[i as u8; 4096]);
        assert!(cache.used() <= max);
        assert!(dir_bytes(tmp.path()) + whole_bytes(tmp.path()) <= max);
    }
    assert!(object_files(tmp.path()).is_empty(), "evicted, both files");
    assert!(cache.read("k", "e", 4 * 4096, 0, 0..10).is_none());
}

fn whole_bytes(dir: &Path) -> u64 {
    bytes_of(&object_files(dir))
}

#[test]
fn stray_halves_of_whole_copies_are_deleted_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let cache = DiskCache::open(config(tmp.path(), Some(1 << 20))).unwrap();
        let data = cache_object(&cache, 4096);
        assert!(cache.build_whole("k", "e", data.len() as u64));
    }
    let sidecar = object_files(tmp.path())
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "sum"))
        .unwrap();
    fs::remove_file(sidecar).unwrap();
    fs::write(tmp.path().join(SUBDIR).join("objects/not-a-copy"), b"x").unwrap();
    let cache = DiskCache::open(config(tmp.path(), Some(1 << 20))).unwrap();
    assert!(object_files(tmp.path()).is_empty());
    assert_eq!(cache.used(), 0);
}

#[test]
fn page_aligned_blocks_are_stored_and_read_back_whether_or_not_written_direct() {
    let tmp = tempfile::tempdir().unwrap();
    let mut config = config(tmp.path(), Some(4 << 20));
    config.block_size = 64 * 1024;
    let cache = DiskCache::open(config).unwrap();
    // A page-aligned 64 KiB block (the O_DIRECT path where the filesystem allows it), and a
    // short last block at an odd address (always through the page cache).
    let memory = aligned_bytes(2 * 64 * 1024, |i| (i % 251) as u8);
    let aligned = &memory[..64 * 1024];
    assert!(direct_ok(&[0; 4096], aligned));
    cache.put("k", "e", 0, aligned);
    let odd = &memory[1..1 + 5000];
    assert!(!direct_ok(&[0; 4096], odd));
    cache.put("k", "e", 1, odd);
    let size = 64 * 1024 + 5000;
    assert_eq!(cache.get("k", "e", size, 0).unwrap().as_ref(), aligned);
    assert_eq!(cache.get("k", "e", size, 1).unwrap().as_ref(), odd);
    assert_eq!(
        cache.read("k", "e", size, 0, 4096..8192).unwrap().as_ref(),
        &aligned[4096..8192]
    );
    assert_eq!(
        fs::read_dir(tmp.path().join(SUBDIR).join("tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn blocks_waiting_for_the_disk_are_bounded_and_the_rest_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = DiskCache::open(config(tmp.path(), Some(1 << 20))).unwrap();
    let first = cache.queue(QUEUE_BYTES - 10).expect("room");
    assert!(cache.queue(11).is_none(), "over the bound");
    assert_eq!(cache.counters.skipped_bytes.load(Ordering::Relaxed), 11);
    let second = cache.queue(10).expect("exactly up to the bound");
    drop(first);
    assert!(
        cache.queue(QUEUE_BYTES - 10).is_some(),
        "freed when dropped"
    );
    drop(second);
    assert!(cache.queue(QUEUE_BYTES).is_some());
}

#[test]
fn a_filesystem_refusing_o_direct_turns_it_off_and_blocks_still_land() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = DiskCache::open(config(tmp.path(), Some(1 << 20))).unwrap();
    assert!(!cache.refuses_direct(&io::Error::from_raw_os_error(libc::ENOSPC)));
    assert!(
        cache.direct_writes.load(Ordering::Relaxed),
        "only EINVAL says so"
    );
    assert!(cache.refuses_direct(&io::Error::from_raw_os_error(libc::EINVAL)));
    assert!(!cache.direct_writes.load(Ordering::Relaxed));
    let memory = aligned_bytes(4096, |_| 9);
    cache.put("k", "e", 0, &memory);
    assert_eq!(
        cache.get("k", "e", 4096, 0).unwrap().as_ref(),
        &[9; 4096][..]
    );
}

#[test]
fn a_block_cut_with_another_size_is_never_served() {
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..20_000).map(|i| (i % 253) as u8).collect();
    {
        let cache = DiskCache::open(config(tmp.path(), Some(1 << 20))).unwrap();
        for (index, block) in data.chunks(4096).enumerate() {
            cache.put("k", "e", index as u64, block);
        }
    }
    let mut bigger = config(tmp.path(), Some(1 << 20));
    bigger.block_size = 8192;
    let cache = DiskCache::open(bigger).unwrap();
    for index in 0..3 {
        assert!(
            cache.get("k", "e", data.len() as u64, index).is_none(),
            "block {index} of 4 KiB served as one of 8 KiB"
        );
    }
    cache.put("k", "e", 1, &data[8192..16384]);
    assert_eq!(
        cache.get("k", "e", data.len() as u64, 1).unwrap().as_ref(),
        &data[8192..16384]
    );
}

#[test]
fn a_directory_others_can_write_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let err = DiskCache::open(config(tmp.path(), Some(1 << 20)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("other users") && !err.contains('\n'), "{err}");
    assert!(!tmp.path().join(SUBDIR).exists(), "nothing created there");
}

#[test]
fn a_directory_of_another_user_is_refused() {
    if rustix::process::geteuid().as_raw() != 0 {
        return; // only root can give a directory away
    }
    let tmp = tempfile::tempdir().unwrap();
    let theirs = tmp.path().join("theirs");
    fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let err = DiskCache::open(config(&theirs, Some(1 << 20)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("uid 65534"), "{err}");
}

#[test]
fn nothing_outside_the_cache_subdirectory_is_touched_or_followed() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let victim = tempfile::tempdir().unwrap();
    fs::write(victim.path().join("precious"), b"keep me").unwrap();
    // What an older layout, another program or an attacker left in DIR.
    for dir in ["tmp", "blocks/00", "objects"] {
        fs::create_dir_all(tmp.path().join(dir)).unwrap();
    }
    fs::write(tmp.path().join("tmp/other"), b"x").unwrap();
    fs::write(tmp.path().join("blocks/00/junk"), b"x").unwrap();
    fs::write(tmp.path().join("objects/junk"), b"x").unwrap();
    {
        let cache = DiskCache::open(config(tmp.path(), Some(1 << 20))).unwrap();
        cache.put("k", "e", 0, &[1u8; 4096]);
    }
    for left in ["tmp/other", "blocks/00/junk", "objects/junk"] {
        assert!(tmp.path().join(left).exists(), "{left} deleted");
    }
    let sub = tmp.path().join(SUBDIR);
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sub), 0o700);
    assert_eq!(mode(&block_files(tmp.path())[0]), 0o600);
    // A symlink planted where the cache keeps its temporary files is refused, never
    // followed into what it points at.
    fs::remove_dir_all(sub.join("tmp")).unwrap();
    std::os::unix::fs::symlink(victim.path(), sub.join("tmp")).unwrap();
    let err = DiskCache::open(config(tmp.path(), Some(1 << 20)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("tmp"), "{err}");
    assert_eq!(
        fs::read(victim.path().join("precious")).unwrap(),
        b"keep me"
    );
    // And one planted among the blocks is deleted as a stray, its target untouched.
    fs::remove_file(sub.join("tmp")).unwrap();
    let shard = block_files(tmp.path())[0].parent().unwrap().to_path_buf();
    std::os::unix::fs::symlink(
        victim.path().join("precious"),
        shard.join("ffffffffffffffff-0"),
    )
    .unwrap();
    let _cache = DiskCache::open(config(tmp.path(), Some(1 << 20))).unwrap();
    assert!(!shard.join("ffffffffffffffff-0").exists());
    assert_eq!(
        fs::read(victim.path().join("precious")).unwrap(),
        b"keep me"
    );
}

#[test]
fn the_bound_counts_what_the_disk_gives_small_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let max = 64 * 1024;
    let cache = DiskCache::open(config(tmp.path(), Some(max))).unwrap();
    // 100-byte objects: each block file is far smaller than the filesystem block it takes.
    for i in 0..200 {
        cache.put(&format!("k{i}"), "e", 0, &[i as u8; 100]);
        let on_disk: u64 = block_files(tmp.path())
            .iter()
            .map(|p| {
                use std::os::unix::fs::MetadataExt;
                fs::metadata(p).unwrap().blocks() * 512
            })
            .sum();
        assert!(
            on_disk <= max,
            "{on_disk} bytes on disk after {i} blocks, bound {max}"
        );
        assert!(cache.used() <= max);
    }
    assert!(block_files(tmp.path()).len() <= (max / 4096) as usize);
    assert!(cache.get("k199", "e", 100, 0).is_some());
}
