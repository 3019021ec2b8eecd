//! The local data cache (`--cache DIR`) through a real mount: where the bytes of a read came
//! from (S3 or the block files), what lands on disk, and what happens when the blocks or the
//! directory go bad.
//!
//! Every claim about the origin of bytes rests on the two summary lines mount-s3 logs at
//! unmount (`cache summary: hits=.. misses=.. rejected=.. evicted=.. bytes=..` and
//! `read summary: get_requests=.. bytes_fetched=.. ..`), and every claim about the disk on
//! the block files themselves, decoded here from their documented layout.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Mount, MountArgs, S3Server, assert_bytes_eq, pread_full, pseudo_random_bytes, summary_fields,
};
use tempfile::TempDir;

const MIB: usize = 1024 * 1024;
/// The default `--cache-block-size`.
const BLOCK: usize = MIB;
/// How long the background block writes may take to reach the disk.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long mount-s3 may take to exit after `fusermount3 -u`.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);
const REFUSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Fixed part of a block file's header: magic (8), version (4), block index (8), data
/// length (4), data offset (4), id length (4), header CRC32C (4); then the id
/// (`bucket\0key\0etag`), one CRC32C per 4 KiB chunk, padding, and the data at its offset.
const HEADER_FIXED: usize = 36;
const MAGIC: &[u8; 8] = b"MS3BLOCK";

// --- helpers --------------------------------------------------------------------------------

/// Where the cache keeps its files inside `--cache DIR`.
fn layout(cache: &Path) -> PathBuf {
    cache.join("mount-s3-cache")
}

/// A fresh, empty cache directory.
fn cache_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("mount-s3-cache-test-")
        .tempdir()
        .expect("cache tempdir")
}

fn arg(p: &Path) -> String {
    p.to_str().expect("UTF-8 temp path").to_string()
}

/// `--cache DIR` with objects kept as blocks only (`--no-passthrough`): for the tests that
/// inspect the block files. Whole-object copies have their own tests below.
fn block_cache(dir: &Path) -> [String; 3] {
    ["--cache".into(), arg(dir), "--no-passthrough".into()]
}

/// The counters of the two summary lines a mount logs when it ends.
#[derive(Debug, Default, Clone)]
struct Summary {
    hits: u64,
    misses: u64,
    rejected: u64,
    evicted: u64,
    /// Bytes of block files the cache accounts for at the end.
    cached_bytes: u64,
    get_requests: u64,
    bytes_fetched: u64,
    bytes_served: u64,
}

impl Summary {
    fn parse(log: &str) -> Summary {
        let cache = summary_fields(log, "cache summary:");
        let read = summary_fields(log, "read summary:");
        let take = |m: &BTreeMap<String, u64>, name: &str| {
            *m.get(name)
                .unwrap_or_else(|| panic!("no {name}= in the summary lines of:\n{log}"))
        };
        Summary {
            hits: take(&cache, "hits"),
            misses: take(&cache, "misses"),
            rejected: take(&cache, "rejected"),
            evicted: take(&cache, "evicted"),
            cached_bytes: take(&cache, "bytes"),
            get_requests: take(&read, "get_requests"),
            bytes_fetched: take(&read, "bytes_fetched"),
            bytes_served: take(&read, "bytes_served"),
        }
    }
}

/// Unmounts the way a user does, waits for the process to end, and returns its whole log
/// (stderr: the harness mounts with `--foreground`).
fn unmount_for_log(mount: Mount) -> String {
    mount.unmount_for_log(EXIT_TIMEOUT)
}

/// [`unmount_for_log`], parsed.
fn unmount_for_summary(mount: Mount) -> (Summary, String) {
    let log = unmount_for_log(mount);
    (Summary::parse(&log), log)
}

/// One block file, decoded.
#[derive(Debug, Clone)]
struct BlockFile {
    path: PathBuf,
    index: u64,
    /// `bucket\0key\0etag`.
    id: String,
    /// Offset of the data in the file.
    data_at: usize,
    data: Vec<u8>,
}

impl BlockFile {
    fn bucket_and_key(&self) -> (&str, &str) {
        let mut parts = self.id.split('\0');
        (parts.next().unwrap_or(""), parts.next().unwrap_or(""))
    }

    fn etag(&self) -> &str {
        self.id.split('\0').nth(2).unwrap_or("")
    }
}

/// Decodes a block file's header; panics if it is not one.
fn decode_block(path: &Path) -> BlockFile {
    let raw = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        raw.len() >= HEADER_FIXED && &raw[..8] == MAGIC,
        "{} is not a block file",
        path.display()
    );
    let u32_at = |at: usize| u32::from_le_bytes(raw[at..at + 4].try_into().unwrap()) as usize;
    let index = u64::from_le_bytes(raw[12..20].try_into().unwrap());
    assert_eq!(u32_at(8), 2, "{}: block format version", path.display());
    let data_len = u32_at(20);
    let data_at = u32_at(24);
    let id_len = u32_at(28);
    assert!(data_at >= HEADER_FIXED + id_len + 4 * data_len.div_ceil(4096));
    assert_eq!(
        raw.len(),
        data_at + data_len,
        "{}: header says {data_len} data bytes after a {data_at}-byte header",
        path.display()
    );
    let id = String::from_utf8_lossy(&raw[HEADER_FIXED..HEADER_FIXED + id_len]).into_owned();
    BlockFile {
        path: path.to_path_buf(),
        index,
        id,
        data_at,
        data: raw[data_at..].to_vec(),
    }
}

/// Paths and disk sizes (allocated blocks) of the files under `DIR/blocks/<shard>/` now
/// (files may vanish while this looks: eviction runs concurrently).
fn block_paths(cache: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let Ok(shards) = fs::read_dir(layout(cache).join("blocks")) else {
        return out;
    };
    for shard in shards.flatten() {
        let Ok(entries) = fs::read_dir(shard.path()) else {
            continue;
        };
        for e in entries.flatten() {
            if let Ok(md) = e.metadata() {
                if md.is_file() {
                    out.push((e.path(), allocated(&md)));
                }
            }
        }
    }
    out.sort();
    out
}

/// Total bytes of the regular files directly under `dir` (for `DIR/tmp`).
fn flat_dir_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| allocated(&m))
        .sum()
}

/// Bytes the disk gives a file (its allocated blocks): what the cache's bound counts.
fn allocated(meta: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.blocks() * 512
}

/// All block files of the cache, decoded.
fn blocks(cache: &Path) -> Vec<BlockFile> {
    block_paths(cache)
        .iter()
        .map(|(p, _)| decode_block(p))
        .collect()
}

/// Number of blocks of an object of `len` bytes.
fn block_count(len: usize, block: usize) -> usize {
    len.div_ceil(block)
}

/// Waits until the block files of `bucket/key` are exactly the blocks `want_indexes` of one
/// ETag, each holding the right bytes of `want`; returns them by index.
#[track_caller]
fn wait_for_object_blocks(
    cache: &Path,
    bucket: &str,
    key: &str,
    want: &[u8],
    block: usize,
    want_indexes: &BTreeSet<u64>,
) -> BTreeMap<u64, BlockFile> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let found: BTreeMap<u64, BlockFile> = blocks(cache)
            .into_iter()
            .filter(|b| b.bucket_and_key() == (bucket, key))
            .filter(|b| {
                let from = b.index as usize * block;
                let to = (from + block).min(want.len());
                from < want.len() && b.data == want[from..to]
            })
            .map(|b| (b.index, b))
            .collect();
        let indexes: BTreeSet<u64> = found.keys().copied().collect();
        if &indexes == want_indexes {
            let etags: BTreeSet<&str> = found.values().map(|b| b.etag()).collect();
            assert!(
                etags.len() <= 1,
                "blocks of {key} carry several ETags: {etags:?}"
            );
            return found;
        }
        if Instant::now() > deadline {
            let all: Vec<(String, u64, usize)> = blocks(cache)
                .into_iter()
                .map(|b| (b.id.replace('\0', "|"), b.index, b.data.len()))
                .collect();
            panic!(
                "after {SETTLE_TIMEOUT:?}, the intact blocks of {key} on disk are {indexes:?}, \
                 want {want_indexes:?}; all block files (id, index, data length): {all:?}"
            );
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn all_indexes(len: usize, block: usize) -> BTreeSet<u64> {
    (0..block_count(len, block) as u64).collect()
}

/// Reads the whole file through the mount and checks it.
#[track_caller]
fn read_and_check(mount: &Mount, key: &str, want: &[u8], what: &str) {
    let got = fs::read(mount.join(key)).unwrap_or_else(|e| panic!("{what}: read {key}: {e}"));
    assert_bytes_eq(&got, want, what);
}

/// Sum of the sizes of the block files and the whole-object copies of `cache`.
fn blocks_bytes(cache: &Path) -> u64 {
    block_paths(cache).iter().map(|(_, len)| len).sum::<u64>()
        + flat_dir_bytes(&layout(cache).join("objects"))
}

/// The whole-object copies of `cache` (data files, without their `.sum` sidecars).
fn whole_copies(cache: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(layout(cache).join("objects"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_none())
        .collect();
    out.sort();
    out
}

/// Waits until `cache` holds exactly one whole-object copy, with its sidecar, equal to `want`
/// and no block files; `None` if that does not happen in time (the kernel or our privileges
/// do not allow passthrough, so no copy is made).
fn wait_for_whole_copy(cache: &Path, want: &[u8]) -> Option<PathBuf> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while Instant::now() < deadline {
        let copies = whole_copies(cache);
        if let [copy] = copies.as_slice() {
            let sidecar = copy.with_extension("sum");
            if sidecar.exists() && block_paths(cache).is_empty() {
                let got = fs::read(copy).expect("read the whole copy");
                assert_bytes_eq(&got, want, "the whole-object copy");
                return Some(copy.clone());
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    None
}

/// The line a mount logs when the kernel agreed to FUSE passthrough (Linux 6.9+ built with
/// it, mount-s3 running as root): only then are whole copies made.
const PASSTHROUGH_ON: &str = "FUSE passthrough on";
/// The line a mount logs when the kernel agreed but refused a backing file (no
/// CAP_SYS_ADMIN in a user namespace, the cache on a stacked filesystem).
const PASSTHROUGH_REFUSED: &str = "FUSE passthrough unavailable";

/// Ends a whole-copy test on a machine without passthrough, after checking that the mount
/// said so (on a machine with it, a missing copy is a failure).
fn without_passthrough(mount: Mount) {
    let log = unmount_for_log(mount);
    assert!(
        !log.contains(PASSTHROUGH_ON),
        "passthrough was on, yet no whole copy was made:\n{log}"
    );
    eprintln!("FUSE passthrough not available here: whole copies not tested");
}

/// Bytes `range` of `file` read through a private read-only mapping.
fn mmap_read(file: &File, range: std::ops::Range<usize>) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    // SAFETY: a read-only private mapping of an open file, unmapped before returning; the
    // file is not truncated meanwhile.
    unsafe {
        let ptr = libc::mmap(
            std::ptr::null_mut(),
            range.end,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(ptr, libc::MAP_FAILED, "mmap");
        let len = range.end;
        let bytes = std::slice::from_raw_parts(ptr.cast::<u8>(), len)[range].to_vec();
        assert_eq!(libc::munmap(ptr, len), 0, "munmap");
        bytes
    }
}

// --- tests ----------------------------------------------------------------------------------

/// A remount with the same cache directory serves a read entirely from the block files.
#[test]
fn remount_serves_cached_object_without_gets() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cache-remount");
    let key = "data/shard.bin";
    let len = 12 * MIB + 4321;
    let want = pseudo_random_bytes(101, len);
    s3.put(&bucket, key, want.clone());
    let cache = cache_dir();
    let args = s3.mount_args(&bucket).args(block_cache(cache.path()));

    let mount = args.clone().mount();
    read_and_check(&mount, key, &want, "first read (from S3)");
    let on_disk = wait_for_object_blocks(
        cache.path(),
        &bucket,
        key,
        &want,
        BLOCK,
        &all_indexes(len, BLOCK),
    );
    let (first, log) = unmount_for_summary(mount);
    let nblocks = block_count(len, BLOCK) as u64;
    assert!(
        first.get_requests >= 1 && first.bytes_fetched >= len as u64,
        "the first mount must have read the object from S3: {first:?}\n{log}"
    );
    assert!(
        first.misses >= nblocks,
        "each of the {nblocks} blocks must have missed once at first: {first:?}"
    );
    assert_eq!(
        first.cached_bytes,
        blocks_bytes(cache.path()),
        "the cache's accounting and the block files on disk disagree"
    );
    assert_eq!(on_disk.len() as u64, nblocks);

    let mount = args.mount();
    read_and_check(&mount, key, &want, "second read (from the cache)");
    let (second, log) = unmount_for_summary(mount);
    assert_eq!(
        (second.get_requests, second.bytes_fetched),
        (0, 0),
        "a remount must read a cached object without any GET: {second:?}\n{log}"
    );
    assert!(
        second.hits >= nblocks,
        "all {nblocks} blocks must be cache hits: {second:?}"
    );
    assert_eq!(
        (second.misses, second.rejected),
        (0, 0),
        "no block may miss or be rejected: {second:?}"
    );
    assert!(
        second.bytes_served >= len as u64,
        "the second mount served fewer bytes than the object: {second:?}"
    );
}

/// A second mount may not share a cache directory that a live mount holds.
#[test]
fn second_mount_on_a_busy_cache_dir_is_refused() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cache-lock");
    s3.put(&bucket, "f.txt", b"held".to_vec());
    let cache = cache_dir();
    let args = s3.mount_args(&bucket).args(block_cache(cache.path()));
    let first = args.clone().mount();
    let target = tempfile::tempdir().expect("second mount point");
    for foreground in [false, true] {
        let line = args
            .run(target.path(), foreground, REFUSE_TIMEOUT)
            .assert_refused(&format!("busy cache dir (foreground={foreground})"));
        assert!(
            line.contains(&arg(cache.path())),
            "the refusal should name the cache directory: {line}"
        );
    }
    assert_eq!(fs::read(first.join("f.txt")).unwrap(), b"held");
}

/// Reads after a remote replacement give the new version only, whatever its size; blocks of
/// the old version are never served, and an ETag seen again is served from its blocks.
#[test]
fn replaced_object_is_never_served_from_old_blocks() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cache-replace");
    let key = "model.bin";
    let cache = cache_dir();
    let mount = s3
        .mount_args(&bucket)
        .args(block_cache(cache.path()))
        .args(["--metadata-ttl", "1"])
        .mount();

    let first_len = 4 * MIB + 100;
    let original = pseudo_random_bytes(201, first_len);
    s3.put(&bucket, key, original.clone());
    read_and_check(&mount, key, &original, "original version");
    let original_blocks = wait_for_object_blocks(
        cache.path(),
        &bucket,
        key,
        &original,
        BLOCK,
        &all_indexes(first_len, BLOCK),
    );
    let original_etag = original_blocks[&0].etag().to_string();

    // Same size, larger, much smaller, tiny, then the original bytes again.
    let versions: Vec<(&str, Vec<u8>)> = vec![
        ("same size", pseudo_random_bytes(202, first_len)),
        ("larger", pseudo_random_bytes(203, 6 * MIB + 7)),
        ("smaller", pseudo_random_bytes(204, MIB + 3)),
        ("tiny", b"0123456789".to_vec()),
        ("original again", original.clone()),
    ];
    let mut previous = original.clone();
    let mut fetched_at_least = first_len as u64;
    for (what, bytes) in &versions {
        s3.put(&bucket, key, bytes.clone());
        thread::sleep(Duration::from_millis(2500));
        let size = fs::metadata(mount.join(key))
            .unwrap_or_else(|e| panic!("{what}: stat: {e}"))
            .len();
        assert_eq!(size, bytes.len() as u64, "{what}: size after replacement");
        let got = fs::read(mount.join(key)).unwrap_or_else(|e| panic!("{what}: read: {e}"));
        // Chunk by chunk, saying whether a wrong chunk is the previous version's.
        let chunk = 64 * 1024;
        for (i, (g, w)) in got.chunks(chunk).zip(bytes.chunks(chunk)).enumerate() {
            if g != w {
                let from = i * chunk;
                let old = previous.get(from..(from + g.len()).min(previous.len()));
                panic!(
                    "{what}: chunk at offset {from} differs from the new version{}",
                    if old == Some(g) {
                        " and is the PREVIOUS version's bytes"
                    } else {
                        ""
                    }
                );
            }
        }
        assert_bytes_eq(&got, bytes, what);
        if *what != "original again" {
            fetched_at_least += bytes.len() as u64;
            // The new version's blocks reach the disk next to the old ones.
            let new_blocks = wait_for_object_blocks(
                cache.path(),
                &bucket,
                key,
                bytes,
                BLOCK,
                &all_indexes(bytes.len(), BLOCK),
            );
            assert!(
                new_blocks.values().all(|b| b.etag() != original_etag),
                "{what}: blocks of a new version carry the original ETag"
            );
        }
        previous = bytes.clone();
    }
    let (summary, log) = unmount_for_summary(mount);
    assert!(
        summary.bytes_fetched >= fetched_at_least,
        "every new version must come from S3 ({fetched_at_least} bytes at least): \
         {summary:?}\n{log}"
    );
    assert!(
        summary.hits >= original_blocks.len() as u64,
        "the original bytes, put again (same ETag), should be read from their {} cached \
         blocks: {summary:?}",
        original_blocks.len()
    );
}

/// A block file with a flipped data byte is rejected, the block is fetched again, and the
/// file is replaced by an intact one.
#[test]
fn corrupted_block_is_rejected_and_replaced() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cache-corrupt");
    let key = "c.bin";
    let len = 5 * MIB + 1000;
    let want = pseudo_random_bytes(301, len);
    s3.put(&bucket, key, want.clone());
    let cache = cache_dir();
    let args = s3.mount_args(&bucket).args(block_cache(cache.path()));
    let every = all_indexes(len, BLOCK);

    let mount = args.clone().mount();
    read_and_check(&mount, key, &want, "first read");
    let on_disk = wait_for_object_blocks(cache.path(), &bucket, key, &want, BLOCK, &every);
    unmount_for_log(mount);

    // Flip one byte in the middle of block 2's data.
    let victim = &on_disk[&2];
    let mut raw = fs::read(&victim.path).unwrap();
    let at = victim.data_at + 1000;
    raw[at] ^= 0xFF;
    fs::write(&victim.path, &raw).unwrap();
    assert_ne!(
        decode_block(&victim.path).data,
        victim.data,
        "the flip took"
    );

    let mount = args.clone().mount();
    read_and_check(&mount, key, &want, "read over a corrupted block");
    // The block is fetched again and written back intact.
    let rewritten = wait_for_object_blocks(cache.path(), &bucket, key, &want, BLOCK, &every);
    let (summary, log) = unmount_for_summary(mount);
    assert_eq!(
        summary.rejected, 1,
        "exactly the corrupted block must be rejected: {summary:?}\n{log}"
    );
    assert_eq!(
        summary.bytes_fetched, BLOCK as u64,
        "only the rejected block may be fetched again: {summary:?}\n{log}"
    );
    assert!(
        summary.hits >= every.len() as u64 - 1,
        "the intact blocks must be hits: {summary:?}"
    );
    assert_eq!(
        rewritten[&2].path, victim.path,
        "block 2 is back at its place"
    );

    // The rewritten file is valid: a third mount reads everything from disk.
    let mount = args.mount();
    read_and_check(&mount, key, &want, "read after the block was replaced");
    let (summary, log) = unmount_for_summary(mount);
    assert_eq!(
        (
            summary.get_requests,
            summary.bytes_fetched,
            summary.rejected
        ),
        (0, 0, 0),
        "the replaced block must be intact: {summary:?}\n{log}"
    );
    assert!(summary.hits >= every.len() as u64, "{summary:?}");
}

/// What [`bound_under_load`] saw.
#[derive(Debug)]
struct LoadOutcome {
    /// Samples taken by the watcher.
    samples: u64,
    /// Largest total of the block files seen.
    max_blocks: u64,
    /// Largest total of the block files and DIR/tmp seen.
    max_with_tmp: u64,
    /// Total of the block files once the writes settled.
    final_bytes: u64,
    summary: Summary,
}

/// Mounts with `--max-cache-size max_mib --cache-block-size block`, reads `readers` different
/// objects of `len` bytes at once (each checked) while a watcher sums the block files every
/// ~10 ms, waits for the background writes to settle, and unmounts.
fn bound_under_load(
    tag: &str,
    max_mib: u64,
    block: usize,
    readers: usize,
    len: usize,
) -> LoadOutcome {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket(tag);
    let objects: Vec<(String, Vec<u8>)> = (0..readers)
        .map(|i| {
            (
                format!("obj-{i}.bin"),
                pseudo_random_bytes(400 + i as u64, len),
            )
        })
        .collect();
    s3.put_many(&bucket, objects.clone(), readers);
    let cache = cache_dir();
    let mount = s3
        .mount_args(&bucket)
        .args([
            "--cache".to_string(),
            arg(cache.path()),
            "--max-cache-size".to_string(),
            max_mib.to_string(),
            "--cache-block-size".to_string(),
            (block / 1024).to_string(),
        ])
        .mount();

    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let dir = cache.path().to_path_buf();
        thread::spawn(move || {
            let (mut samples, mut max_blocks, mut max_with_tmp) = (0u64, 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let b = blocks_bytes(&dir);
                let t = flat_dir_bytes(&layout(&dir).join("tmp"));
                samples += 1;
                max_blocks = max_blocks.max(b);
                max_with_tmp = max_with_tmp.max(b + t);
                thread::sleep(Duration::from_millis(10));
            }
            (samples, max_blocks, max_with_tmp)
        })
    };

    let start = Instant::now();
    let threads: Vec<_> = objects
        .iter()
        .map(|(key, want)| {
            let path = mount.join(key);
            let key = key.clone();
            let want = want.clone();
            thread::spawn(move || {
                let got = fs::read(&path).unwrap_or_else(|e| panic!("read {key}: {e}"));
                assert_bytes_eq(&got, &want, &key);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("reader thread");
    }
    let read_time = start.elapsed();
    // Let the background writes finish: the total must stop moving.
    let mut last = blocks_bytes(cache.path());
    let mut still_since = Instant::now();
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while still_since.elapsed() < Duration::from_millis(750) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        let now = blocks_bytes(cache.path());
        if now != last {
            last = now;
            still_since = Instant::now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (samples, max_blocks, max_with_tmp) = watcher.join().expect("watcher thread");
    let (summary, log) = unmount_for_summary(mount);
    let final_bytes = blocks_bytes(cache.path());
    eprintln!(
        "{tag}: {samples} samples, max {max_blocks} bytes of block files, {max_with_tmp} with \
         DIR/tmp, {final_bytes} at the end; reads took {read_time:?}; {summary:?}"
    );
    let total_read = (readers * len) as u64;
    assert!(
        summary.bytes_fetched >= total_read,
        "all objects must have come from S3: {summary:?}\n{log}"
    );
    // Whatever survived is intact and belongs to one of the objects.
    for b in blocks(cache.path()) {
        let (_, key) = b.bucket_and_key();
        let want = &objects
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("block of unknown key {key:?}"))
            .1;
        let from = b.index as usize * block;
        assert_eq!(
            b.data,
            want[from..(from + block).min(len)],
            "block {} of {key}",
            b.index
        );
    }
    LoadOutcome {
        samples,
        max_blocks,
        max_with_tmp,
        final_bytes,
        summary,
    }
}

/// Four concurrent readers of four times the bound: the block files never exceed the bound
/// (plus one block in flight), and all bytes are right.
#[test]
fn size_bound_holds_under_concurrent_reads() {
    let bound = 8 * MIB as u64;
    let len = 8 * MIB;
    let out = bound_under_load("cache-bound", 8, BLOCK, 4, len);
    let limit = bound + BLOCK as u64 + 1024; // one block and its header, generously
    assert!(
        out.samples >= 10,
        "the watcher sampled only {} times; the test proves nothing",
        out.samples
    );
    assert!(
        out.max_blocks <= limit,
        "block files reached {} bytes, over the bound {bound} + one block: {out:?}",
        out.max_blocks
    );
    assert!(
        out.max_with_tmp <= limit,
        "block files and DIR/tmp reached {} bytes, over the bound {bound} + one block: {out:?}",
        out.max_with_tmp
    );
    assert!(
        out.max_blocks >= bound / 2,
        "the block files never filled half the cache: the watcher saw nothing: {out:?}"
    );
    // 32 MiB went through an 8 MiB cache: most blocks were written and evicted.
    let written = 4 * block_count(len, BLOCK) as u64;
    let fits = bound / (BLOCK as u64 + 1);
    assert!(
        out.summary.evicted >= written - fits,
        "at least {} evictions expected ({written} blocks written, {fits} fit): {out:?}",
        written - fits
    );
    assert!(
        out.final_bytes > 0 && out.final_bytes <= bound,
        "after the reads the block files hold {} bytes (bound {bound})",
        out.final_bytes
    );
    assert_eq!(
        out.summary.cached_bytes, out.final_bytes,
        "the cache's accounting and the files on disk disagree: {out:?}"
    );
}

/// A bound that holds a single block, with several block writes in flight at once: a block
/// evicted while it is still being written must not land on disk uncounted.
#[test]
fn one_block_bound_holds_with_concurrent_writes() {
    let bound = MIB as u64;
    let block = MIB / 2;
    let out = bound_under_load("cache-tiny-bound", 1, block, 4, 8 * MIB);
    let limit = bound + block as u64 + 1024;
    assert!(out.samples >= 10, "too few samples: {out:?}");
    assert!(
        out.max_blocks <= limit,
        "block files reached {} bytes, over the bound {bound} + one block: {out:?}",
        out.max_blocks
    );
    assert!(
        out.final_bytes > 0 && out.final_bytes <= bound,
        "after the reads the block files hold {} bytes (bound {bound}): {out:?}",
        out.final_bytes
    );
    assert_eq!(
        out.summary.cached_bytes, out.final_bytes,
        "the cache's accounting and the files on disk disagree: {out:?}"
    );
}

/// A cache directory that breaks under a live mount: reads go on from S3, with one warning.
#[test]
fn broken_cache_dir_falls_back_to_s3_with_one_warning() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cache-broken");
    let objects: Vec<(String, Vec<u8>)> = (0..2)
        .map(|i| {
            (
                format!("f{i}.bin"),
                pseudo_random_bytes(500 + i as u64, 3 * MIB + 11),
            )
        })
        .collect();
    s3.put_many(&bucket, objects.clone(), 2);
    let cache = cache_dir();
    let mount = s3
        .mount_args(&bucket)
        .args(block_cache(cache.path()))
        .mount();
    // Root ignores permissions, so break the directory's shape instead: no block directory,
    // and a regular file where the temporary directory was.
    let blocks_dir = layout(cache.path()).join("blocks");
    let tmp_dir = layout(cache.path()).join("tmp");
    assert!(
        blocks_dir.is_dir() && tmp_dir.is_dir(),
        "the cache laid out its directories"
    );
    fs::remove_dir_all(&blocks_dir).unwrap();
    fs::remove_dir_all(&tmp_dir).unwrap();
    fs::write(&tmp_dir, b"not a directory").unwrap();
    fs::write(&blocks_dir, b"not a directory").unwrap();

    const WARNING: &str = "data cache cannot store blocks";
    for round in 0..2 {
        for (key, want) in &objects {
            read_and_check(&mount, key, want, &format!("{key}, round {round}"));
        }
    }
    // The block writes run in the background: wait for the warning.
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while !mount.log().contains(WARNING) {
        assert!(
            Instant::now() < deadline,
            "no {WARNING:?} warning; log:\n{}",
            mount.log()
        );
        thread::sleep(Duration::from_millis(50));
    }
    thread::sleep(Duration::from_millis(500));
    let (summary, log) = unmount_for_summary(mount);
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(WARNING)).collect();
    assert_eq!(
        warnings.len(),
        1,
        "exactly one warning line expected, got:\n{}",
        warnings.join("\n")
    );
    let total: u64 = objects.iter().map(|(_, w)| w.len() as u64).sum();
    assert!(
        summary.bytes_fetched >= 2 * total,
        "both rounds must have come from S3: {summary:?}"
    );
    assert_eq!(
        (summary.hits, summary.cached_bytes),
        (0, 0),
        "nothing can have been cached: {summary:?}"
    );
    assert!(
        summary.misses >= 2 * 2 * block_count(3 * MIB + 11, BLOCK) as u64,
        "every block of both rounds must be a miss: {summary:?}"
    );
    assert_eq!(fs::read(&tmp_dir).unwrap(), b"not a directory");
    assert_eq!(fs::read(&blocks_dir).unwrap(), b"not a directory");
}

/// `--cache` naming a regular file is refused with one line, and the file is left alone.
#[test]
fn cache_that_is_a_file_is_refused() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cache-file");
    let dir = cache_dir();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"keep me").unwrap();
    let args = s3.mount_args(&bucket).args(["--cache", &arg(&file)]);
    let target = tempfile::tempdir().expect("mount point");
    for foreground in [false, true] {
        let line = args
            .run(target.path(), foreground, REFUSE_TIMEOUT)
            .assert_refused(&format!("--cache is a file (foreground={foreground})"));
        assert!(
            line.contains(&arg(&file)),
            "the refusal should name the path: {line}"
        );
    }
    assert_eq!(fs::read(&file).unwrap(), b"keep me");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing may be created next to the file"
    );
}

/// A remount reads only the blocks a partial read did not cache.
#[test]
fn partly_cached_object_fetches_only_missing_blocks() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("cache-partial");
    let key = "p.bin";
    let len = 6 * MIB;
    let want = pseudo_random_bytes(601, len);
    s3.put(&bucket, key, want.clone());
    let cache = cache_dir();
    let args = s3
        .mount_args(&bucket)
        .args(block_cache(cache.path()))
        .args(["--cache-block-size", "1024"]);

    let mount = args.clone().mount();
    {
        let file = File::open(mount.join(key)).unwrap();
        let got = pread_full(&file, 2 * MIB as u64, MIB);
        assert_bytes_eq(&got, &want[2 * MIB..3 * MIB], "pread [2 MiB, 3 MiB)");
    }
    wait_for_object_blocks(
        cache.path(),
        &bucket,
        key,
        &want,
        BLOCK,
        &BTreeSet::from([2]),
    );
    let (first, log) = unmount_for_summary(mount);
    assert_eq!(
        first.bytes_fetched, MIB as u64,
        "a 1 MiB aligned pread should fetch exactly its block: {first:?}\n{log}"
    );
    let indexes: Vec<u64> = blocks(cache.path()).iter().map(|b| b.index).collect();
    assert_eq!(indexes, [2], "only block 2 may be cached");

    let mount = args.mount();
    read_and_check(&mount, key, &want, "whole read after a partial one");
    let (second, log) = unmount_for_summary(mount);
    assert_eq!(
        second.bytes_fetched,
        5 * MIB as u64,
        "only the 5 missing blocks may be fetched: {second:?}\n{log}"
    );
    assert!(second.hits >= 1, "block 2 must be a hit: {second:?}");
    assert_eq!(second.rejected, 0, "{second:?}");
}

// --- whole-object copies and FUSE passthrough ---------------------------------------------

/// `len` bytes at `offset` of the file at `path`, from a fresh open.
fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let file = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    pread_full(&file, offset, len)
}

/// An object read once, completely, through a mount with `--cache`, and its whole copy.
struct WholeCopied {
    bucket: String,
    want: Vec<u8>,
    cache: TempDir,
    /// The mount's arguments, to mount again.
    args: MountArgs,
    /// The copy's data file.
    copy: PathBuf,
}

/// Puts `len` bytes (from `seed`) at `key` in a new bucket, mounts it with `--cache` and
/// `extra`, reads the object once and waits for its whole copy; returns the live mount too.
/// `None` where passthrough is unavailable (after checking that the mount said so).
fn read_until_whole(
    tag: &str,
    key: &str,
    len: usize,
    seed: u64,
    extra: &[&str],
) -> Option<(WholeCopied, Mount)> {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket(tag);
    let want = pseudo_random_bytes(seed, len);
    s3.put(&bucket, key, want.clone());
    let cache = cache_dir();
    let args = s3
        .mount_args(&bucket)
        .args(["--cache", &arg(cache.path())])
        .args(extra);
    let mount = args.clone().mount();
    read_and_check(&mount, key, &want, "first read (from S3)");
    let Some(copy) = wait_for_whole_copy(cache.path(), &want) else {
        without_passthrough(mount);
        return None;
    };
    let copied = WholeCopied {
        bucket,
        want,
        cache,
        args,
        copy,
    };
    Some((copied, mount))
}

/// An object read completely becomes one whole-object copy (its blocks go); after a remount
/// the kernel reads it from that copy: every byte right, and not one read or GET reaches
/// mount-s3.
#[test]
fn a_complete_object_is_read_by_the_kernel_from_its_whole_copy() {
    let key = "shard.bin";
    let len = 5 * MIB + 999;
    let Some((
        WholeCopied {
            want, cache, args, ..
        },
        mount,
    )) = read_until_whole("cache-whole", key, len, 701, &[])
    else {
        return;
    };
    let (first, log) = unmount_for_summary(mount);
    assert!(log.contains(PASSTHROUGH_ON), "{log}");
    assert_eq!(first.cached_bytes, blocks_bytes(cache.path()), "{first:?}");
    assert!(log.contains("whole_built=1"), "{log}");

    let mount = args.mount();
    let path = mount.join(key);
    read_and_check(
        &mount,
        key,
        &want,
        "second read (the kernel, from the copy)",
    );
    // Many opens, each right after the last one's close: an open that races the release of
    // the inode's last passthrough file must still pass through.
    let spots = [
        (0, 1),
        (4095, 2),
        (MIB as u64 - 1, 4097),
        ((len - 7) as u64, 7),
    ];
    for (offset, n) in spots.into_iter().cycle().take(200) {
        let got = read_at(&path, offset, n);
        assert_bytes_eq(&got, &want[offset as usize..offset as usize + n], "pread");
    }
    // mmap reads pass through too.
    let file = File::open(&path).unwrap();
    let mapped = mmap_read(&file, MIB..MIB + 100);
    assert_bytes_eq(&mapped, &want[MIB..MIB + 100], "mmap");
    drop(file);
    let (second, log) = unmount_for_summary(mount);
    if log.contains(PASSTHROUGH_REFUSED) {
        eprintln!("the kernel refused the backing file here: read through mount-s3, checked");
        return;
    }
    assert_eq!(
        (
            second.get_requests,
            second.bytes_served,
            second.hits,
            second.misses
        ),
        (0, 0, 0, 0),
        "the kernel must have read the copy without mount-s3: {second:?}\n{log}"
    );
    assert!(!log.contains("whole_opens=0"), "{log}");
}

/// A whole copy changed on disk is never handed to the kernel: the read is right (from S3),
/// the copy is dropped, and the next complete read makes a new one.
#[test]
fn a_changed_whole_copy_is_dropped_not_served() {
    let key = "w.bin";
    let len = 2 * MIB + 5;
    let Some((
        WholeCopied {
            want,
            cache,
            args,
            copy,
            ..
        },
        mount,
    )) = read_until_whole("cache-whole-bad", key, len, 702, &[])
    else {
        return;
    };
    unmount_for_log(mount);

    // Flip one byte in place, as a disk or a stray program might.
    let mut bytes = fs::read(&copy).unwrap();
    bytes[MIB + 3] ^= 0x20;
    fs::write(&copy, &bytes).unwrap();

    let mount = args.mount();
    let got = read_at(&mount.join(key), MIB as u64, 4096);
    assert_bytes_eq(&got, &want[MIB..MIB + 4096], "read over the flipped byte");
    read_and_check(&mount, key, &want, "whole read after the flip");
    let again = wait_for_whole_copy(cache.path(), &want).expect("a new copy");
    assert_bytes_eq(&fs::read(again).unwrap(), &want, "the new copy");
    let (summary, log) = unmount_for_summary(mount);
    assert!(summary.rejected >= 1, "{summary:?}\n{log}");
    assert!(summary.bytes_fetched >= len as u64, "{summary:?}");
}

/// While the kernel reads a file from its whole copy (FUSE passthrough), an O_DIRECT read of
/// the same version shares the copy; a newer version of the object, and an overwrite, get an
/// inode of their own (the open answers ESTALE and the kernel looks the name up again), so
/// they neither fail nor mix with the file held open, which keeps reading its version.
#[test]
fn opens_beside_a_passthrough_file_share_it_or_get_an_inode_of_their_own() {
    let s3 = S3Server::shared();
    let key = "m.bin";
    let len = 3 * MIB + 17;
    let extra = ["--allow-overwrite", "--metadata-ttl", "0"];
    let Some((
        WholeCopied {
            bucket,
            want,
            cache: _cache,
            args,
            ..
        },
        mount,
    )) = read_until_whole("cache-whole-mixed", key, len, 703, &extra)
    else {
        return;
    };
    // A fresh mount: no release of the first read's handle can still be on its way (the
    // kernel would then not let `held` pass through).
    unmount_for_log(mount);
    let mount = args.clone().mount();
    let path = mount.join(key);
    let held = File::open(&path).unwrap();
    assert_bytes_eq(&pread_full(&held, 0, 100), &want[..100], "held open");
    let held_ino = {
        use std::os::unix::fs::MetadataExt;
        held.metadata().unwrap().ino()
    };

    let direct = read_direct(&path, MIB as u64, 2 * MIB);
    assert_bytes_eq(
        &direct,
        &want[MIB..3 * MIB],
        "O_DIRECT read beside passthrough",
    );

    // A new version in S3: a fresh open reads it, on an inode of its own.
    let newer = pseudo_random_bytes(704, MIB + 1);
    s3.put(&bucket, key, newer.clone());
    // `--metadata-ttl 0` is minimal: an open trusts a stat fetched in the last 0.1 s (the
    // O_DIRECT read's HEAD just now), as Mountpoint's kernel trusts one for 0.1 s.
    std::thread::sleep(Duration::from_millis(200));
    let newer_open = File::open(&path).expect("open of a newer version beside passthrough");
    {
        use std::os::unix::fs::MetadataExt;
        assert_ne!(newer_open.metadata().unwrap().ino(), held_ino);
    }
    assert_bytes_eq(&fs::read(&path).unwrap(), &newer, "the newer version");
    drop(newer_open);
    // An overwrite works too, and leaves no upload behind.
    let written = pseudo_random_bytes(705, 64 * 1024);
    fs::write(&path, &written).expect("overwrite beside passthrough");
    s3.assert_object_matches(&bucket, key, &written[..], written.len() as u64);
    assert!(s3.multipart_uploads(&bucket).is_empty(), "no upload left");
    assert_bytes_eq(&fs::read(&path).unwrap(), &written, "read back");

    // The file held open still reads the version it opened, and its size.
    assert_bytes_eq(
        &pread_full(&held, (len - 10) as u64, 10),
        &want[len - 10..],
        "held open",
    );
    assert_eq!(held.metadata().unwrap().len(), len as u64);
    drop(held);
    unmount_for_summary(mount);
}

/// `len` bytes at `offset` read with O_DIRECT into a 4 KiB-aligned buffer.
fn read_direct(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap_or_else(|e| panic!("O_DIRECT open of {}: {e}", path.display()));
    let mut buf = vec![0u8; len + 4096];
    let skip = buf.as_ptr().align_offset(4096);
    let mut done = 0;
    while done < len {
        let at = buf[skip + done..].as_mut_ptr();
        // SAFETY: `at` points into `buf` with at least `len - done` bytes after it.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                at.cast(),
                len - done,
                (offset + done as u64) as libc::off_t,
            )
        };
        assert!(n > 0, "O_DIRECT pread: {}", std::io::Error::last_os_error());
        done += n as usize;
    }
    buf[skip..skip + len].to_vec()
}
