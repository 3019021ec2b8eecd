//! Reliability under faults: the mount talks to the server through [`FaultProxy`], which
//! resets connections, answers 500/503, truncates bodies, stalls, or plays a dead server.
//! Whatever happens, a program never gets wrong bytes, a failed write leaves no object (and
//! no multipart upload), errors are EIO within a bounded time, and the mount stays usable.

mod common;

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::{
    Fault, FaultPlan, FaultProxy, Liveness, Mount, Rng, S3Server, close, list_dir,
    pseudo_random_bytes,
};

const MIB: usize = 1024 * 1024;

/// A mount of `bucket` whose endpoint is `proxy`.
fn proxied_mount(s3: &S3Server, bucket: &str, proxy: &FaultProxy, extra: &[&str]) -> Mount {
    s3.mount_args(bucket)
        .endpoint(&proxy.url())
        .args(extra.iter().copied())
        .mount()
}

/// Bytes of `got` that differ from `want`, a missing or extra tail included.
fn wrong_bytes(got: &[u8], want: &[u8]) -> u64 {
    let differ = got.iter().zip(want).filter(|(a, b)| a != b).count();
    (differ + got.len().abs_diff(want.len())) as u64
}

/// Reads `file` to its end in 1 MiB reads; returns the bytes read and the error that
/// stopped it, if any.
fn read_all(file: &mut File) -> (Vec<u8>, Option<io::Error>) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; MIB];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (out, Some(e)),
        }
    }
}

#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    wrong: AtomicU64,
    failed: AtomicU64,
    /// Errors other than EIO, described.
    odd_errors: Mutex<Vec<String>>,
}

impl Tally {
    fn error(&self, what: &str, e: &io::Error) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        eprintln!("{what}: {e}");
        if e.raw_os_error() != Some(libc::EIO) {
            self.odd_errors.lock().unwrap().push(format!("{what}: {e}"));
        }
    }
}

#[test]
fn reads_under_random_faults_never_return_wrong_bytes() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("faults-reads");
    let mut rng = Rng::new(71);
    let sizes: Vec<usize> = (0..20)
        .map(|_| MIB + rng.below(19 * MIB as u64) as usize)
        .collect();
    let objects: Vec<(String, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, len)| {
            (
                format!("obj-{i:02}"),
                pseudo_random_bytes(1000 + i as u64, *len),
            )
        })
        .collect();
    s3.put_many(&bucket, objects, 4);

    let proxy = FaultProxy::start(s3.endpoint(), FaultPlan::none());
    let mount = proxied_mount(s3, &bucket, &proxy, &[]);
    proxy.set_plan(FaultPlan::transient(0.05, 4242, &[1000, 2000]));
    let started = Instant::now();

    let tally = Tally::default();
    let full_ok = AtomicU64::new(0);
    let next = AtomicU64::new(0);
    thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                    if i >= sizes.len() {
                        return;
                    }
                    let want = pseudo_random_bytes(1000 + i as u64, sizes[i]);
                    let path = mount.join(format!("obj-{i:02}"));
                    let mut f = match File::open(&path) {
                        Ok(f) => f,
                        Err(e) => {
                            tally.error(&format!("open obj-{i:02}"), &e);
                            continue;
                        }
                    };
                    tally.ops.fetch_add(1, Ordering::Relaxed);
                    let (got, err) = read_all(&mut f);
                    let prefix = &want[..got.len().min(want.len())];
                    tally
                        .wrong
                        .fetch_add(wrong_bytes(&got, prefix), Ordering::Relaxed);
                    match err {
                        Some(e) => tally.error(&format!("read obj-{i:02} at {}", got.len()), &e),
                        None if got.len() == want.len() => {
                            full_ok.fetch_add(1, Ordering::Relaxed);
                        }
                        None => {
                            eprintln!(
                                "obj-{i:02}: EOF after {} of {} bytes",
                                got.len(),
                                want.len()
                            );
                            tally.wrong.fetch_add(
                                (want.len() - got.len().min(want.len())) as u64,
                                Ordering::Relaxed,
                            );
                        }
                    }
                    if i % 3 == 0 {
                        let mut r = Rng::new(i as u64 + 9);
                        for _ in 0..10 {
                            let off = r.below(want.len() as u64) as usize;
                            let len = (1 + r.below(MIB as u64) as usize).min(want.len() - off);
                            let mut buf = vec![0u8; len];
                            tally.ops.fetch_add(1, Ordering::Relaxed);
                            match f.read_at(&mut buf, off as u64) {
                                Ok(n) => {
                                    tally.wrong.fetch_add(
                                        wrong_bytes(&buf[..n], &want[off..off + n]),
                                        Ordering::Relaxed,
                                    );
                                }
                                Err(e) => tally.error(&format!("pread obj-{i:02} at {off}"), &e),
                            }
                        }
                    }
                }
            });
        }
    });
    let stats = proxy.stats();
    let (ops, wrong, failed) = (
        tally.ops.load(Ordering::Relaxed),
        tally.wrong.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
    );
    let full_ok = full_ok.load(Ordering::Relaxed);
    eprintln!(
        "reads under faults in {:?}: {} faults injected, {ops} operations, {wrong} wrong bytes, \
         {failed} failed reads, {full_ok}/20 objects read fully; proxy: {stats}",
        started.elapsed(),
        stats.faults_total()
    );
    drop(mount);
    assert!(stats.faults_total() > 0, "no fault was injected: {stats}");
    assert_eq!(wrong, 0, "wrong bytes reached a reader");
    let odd = tally.odd_errors.lock().unwrap();
    assert!(odd.is_empty(), "errors other than EIO: {odd:?}");
    assert!(
        full_ok >= 18,
        "only {full_ok} of 20 objects could be read fully"
    );
}

#[test]
fn writes_under_random_faults_are_whole_or_absent() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("faults-writes");
    let mut rng = Rng::new(72);
    let sizes: Vec<usize> = (0..20)
        .map(|_| MIB + rng.below(29 * MIB as u64) as usize)
        .collect();
    // Every fifth file replaces an existing object.
    let old: Vec<(String, Vec<u8>)> = (0..20)
        .step_by(5)
        .map(|i| {
            (
                format!("file-{i:02}"),
                pseudo_random_bytes(500 + i as u64, 300_000),
            )
        })
        .collect();
    s3.put_many(&bucket, old, 4);

    let proxy = FaultProxy::start(s3.endpoint(), FaultPlan::none());
    let mount = proxied_mount(s3, &bucket, &proxy, &["--allow-overwrite"]);
    proxy.set_plan(FaultPlan::transient(0.05, 4343, &[1000, 2000]));
    let started = Instant::now();

    let tally = Tally::default();
    let next = AtomicU64::new(0);
    let outcome: Mutex<Vec<Option<bool>>> = Mutex::new(vec![None; sizes.len()]);
    thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                    if i >= sizes.len() {
                        return;
                    }
                    let data = pseudo_random_bytes(2000 + i as u64, sizes[i]);
                    let name = format!("file-{i:02}");
                    tally.ops.fetch_add(1, Ordering::Relaxed);
                    let ok = match File::create(mount.join(&name)) {
                        Err(e) => {
                            tally.error(&format!("create {name}"), &e);
                            false
                        }
                        Ok(mut f) => {
                            let mut written = Ok(());
                            for chunk in data.chunks(MIB) {
                                written = f.write_all(chunk);
                                if written.is_err() {
                                    break;
                                }
                            }
                            let closed = close(f);
                            match written.and(closed) {
                                Ok(()) => true,
                                Err(e) => {
                                    tally.error(&format!("write/close {name}"), &e);
                                    false
                                }
                            }
                        }
                    };
                    outcome.lock().unwrap()[i] = Some(ok);
                }
            });
        }
    });
    let stats = proxy.stats();
    let elapsed = started.elapsed();
    drop(mount);

    // Check everything directly on the server.
    let mut wrong = 0u64;
    let mut partial = 0u64;
    let mut problems = Vec::new();
    let outcome = outcome.into_inner().unwrap();
    for (i, ok) in outcome.iter().enumerate() {
        let name = format!("file-{i:02}");
        let want = pseudo_random_bytes(2000 + i as u64, sizes[i]);
        let head = s3.head_if_exists(&bucket, &name);
        match (ok, head) {
            (Some(true), Some(_)) => {
                let got = s3.get(&bucket, &name);
                let w = wrong_bytes(&got, &want);
                if w > 0 {
                    wrong += w;
                    problems.push(format!("{name}: close was Ok but {w} bytes are wrong"));
                }
            }
            (Some(true), None) => {
                partial += 1;
                problems.push(format!("{name}: close was Ok but there is no object"));
            }
            (_, None) => {
                if i % 5 == 0 {
                    problems.push(format!("{name}: failed overwrite removed the old object"));
                }
            }
            (_, Some((len, _))) => {
                let got = s3.get(&bucket, &name);
                if i % 5 == 0 && got == pseudo_random_bytes(500 + i as u64, 300_000) {
                    continue;
                }
                partial += 1;
                problems.push(format!(
                    "{name}: write/close failed but an object of {len} bytes is there \
                     (the new bytes whole: {})",
                    got == want
                ));
            }
        }
    }
    let uploads = uploads_after_aborts(s3, &bucket);
    // A failed write must have aborted its upload, and a lost CreateMultipartUpload
    // answer must not leave one behind either (see `lost_create_multipart_response_...`).
    let failed = tally.failed.load(Ordering::Relaxed);
    eprintln!(
        "writes under faults in {elapsed:?}: {} faults injected, {} operations, {wrong} wrong \
         bytes, {partial} partial objects, {failed} failed writes, {} multipart uploads left; \
         proxy: {stats}",
        stats.faults_total(),
        tally.ops.load(Ordering::Relaxed),
        uploads.len()
    );
    assert!(stats.faults_total() > 0, "no fault was injected: {stats}");
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(
        uploads.is_empty(),
        "multipart uploads left behind: {uploads:?}"
    );
    let odd = tally.odd_errors.lock().unwrap();
    assert!(odd.is_empty(), "errors other than EIO: {odd:?}");
    assert!(
        failed <= 4,
        "{failed} of 20 writes failed under 5% transient faults"
    );
}

/// The multipart uploads of `bucket` (direct to the server) once none is left or 15 s have
/// passed: aborts may still be on their way when close returned.
fn uploads_after_aborts(s3: &S3Server, bucket: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut uploads = s3.multipart_uploads(bucket);
    while !uploads.is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
        uploads = s3.multipart_uploads(bucket);
    }
    uploads
}

/// Writes a 20 MiB file (three parts) through a proxy that resets the connection after
/// forwarding the first request whose line contains `needle(bucket)`, i.e. the server did
/// the work and the response was lost. Whatever close says must be true on the server, and
/// no multipart upload may be left.
fn lost_response(tag: &str, fault: Fault, needle: impl Fn(&str) -> String) {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket(tag);
    let proxy = FaultProxy::start(s3.endpoint(), FaultPlan::none());
    let mount = proxied_mount(s3, &bucket, &proxy, &[]);
    proxy.script_matching(&needle(&bucket), fault);
    let data = pseudo_random_bytes(8, 20 * MIB);
    let mut f = File::create(mount.join("big.bin")).unwrap();
    let written = data.chunks(MIB).try_for_each(|c| f.write_all(c));
    let closed = close(f);
    let result = written.and(closed);
    eprintln!("{tag}: write/close {result:?}; proxy: {}", proxy.stats());
    assert!(
        proxy.targeted_done(),
        "no request matched {:?}",
        needle(&bucket)
    );
    drop(mount);
    match &result {
        Ok(()) => assert_eq!(
            wrong_bytes(&s3.get(&bucket, "big.bin"), &data),
            0,
            "close was Ok but the object differs"
        ),
        Err(e) => {
            assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
            s3.assert_no_object(&bucket, "big.bin", "after a failed close");
        }
    }
    let uploads = uploads_after_aborts(s3, &bucket);
    assert!(
        uploads.is_empty(),
        "multipart uploads left behind: {uploads:?}"
    );
}

#[test]
fn lost_create_multipart_response_leaves_no_upload() {
    lost_response("faults-lost-create", Fault::ResetBeforeResponse, |b| {
        format!("POST /{b}/big.bin?uploads")
    });
}

#[test]
fn truncated_create_multipart_response_leaves_no_upload() {
    // A 200 whose XML is cut: the upload exists on the server, the id never arrived.
    lost_response("faults-cut-create", Fault::Truncate, |b| {
        format!("POST /{b}/big.bin?uploads")
    });
}

#[test]
fn lost_complete_multipart_response_is_whole_or_absent() {
    lost_response("faults-lost-complete", Fault::ResetBeforeResponse, |b| {
        format!("POST /{b}/big.bin?uploadId=")
    });
}

/// The server dies (`how`) under a pending read and a pending write: both get EIO within a
/// bounded time, cached metadata still answers, and once the server is back new opens work
/// without a remount.
fn dead_server(how: Liveness) {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket(&format!("faults-dead-{how:?}"));
    let big = pseudo_random_bytes(3, 64 * MIB);
    s3.put(&bucket, "data/big.bin", big.clone());
    s3.put(&bucket, "other/small.txt", b"still here".to_vec());
    s3.put(&bucket, "other/later.bin", pseudo_random_bytes(4, MIB));
    let proxy = FaultProxy::start(s3.endpoint(), FaultPlan::none());
    let mount = proxied_mount(
        s3,
        &bucket,
        &proxy,
        &["--request-deadline", "5", "--metadata-ttl", "300"],
    );
    let bound = Duration::from_secs(30);

    // Cache what the mount knows about other/.
    assert_eq!(list_dir(&mount.join("other")).len(), 2);
    fs::metadata(mount.join("other/small.txt")).expect("stat before the server died");

    // A pending read: the first MiB, then the server dies, then a read far away.
    let f = File::open(mount.join("data/big.bin")).unwrap();
    let mut buf = vec![0u8; MIB];
    let n = f.read_at(&mut buf, 0).expect("first read");
    assert_eq!(wrong_bytes(&buf[..n], &big[..n]), 0);
    proxy.set_liveness(how);
    let died = Instant::now();
    let r = f.read_at(&mut buf, 60 * MIB as u64);
    let took = died.elapsed();
    eprintln!("{how:?}: read after the server died: {r:?} after {took:?}");
    match r {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "read error: {e}"),
        Ok(n) => assert_eq!(
            wrong_bytes(&buf[..n], &big[60 * MIB..60 * MIB + n]),
            0,
            "read while the server was dead returned wrong bytes"
        ),
    }
    assert!(took < bound, "the read took {took:?}");
    drop(f);

    // The mount still answers what it has cached.
    let t = Instant::now();
    let st = fs::metadata(mount.join("other/small.txt"));
    let stat_took = t.elapsed();
    let t = Instant::now();
    let ls = fs::read_dir(mount.join("other")).and_then(|d| {
        d.map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<Vec<String>>>()
    });
    let ls_took = t.elapsed();
    eprintln!(
        "{how:?}: while dead, stat: {:?} in {stat_took:?}; ls of a listed directory: {ls:?} \
         in {ls_took:?}",
        st.as_ref().map(|m| m.len())
    );
    assert!(
        st.is_ok(),
        "a cached stat failed while the server was dead: {st:?}"
    );
    assert!(
        stat_took < Duration::from_secs(2),
        "a cached stat took {stat_took:?}"
    );
    assert!(ls_took < bound, "ls took {ls_took:?}");

    // A pending write: 9 MiB while alive (one part away), then the server dies.
    proxy.set_liveness(Liveness::Alive);
    let mut w = File::create(mount.join("data/new.bin")).unwrap();
    let data = pseudo_random_bytes(5, 40 * MIB);
    for chunk in data[..9 * MIB].chunks(MIB) {
        w.write_all(chunk).expect("write while alive");
    }
    proxy.set_liveness(how);
    let died = Instant::now();
    let mut first_error = None;
    for chunk in data[9 * MIB..].chunks(MIB) {
        if let Err(e) = w.write_all(chunk) {
            first_error = Some(e);
            break;
        }
    }
    let closed = close(w);
    let took = died.elapsed();
    eprintln!("{how:?}: write error {first_error:?}, close {closed:?}, after {took:?}");
    let error = first_error
        .or(closed.err())
        .expect("neither write nor close failed while the server was dead");
    assert_eq!(
        error.raw_os_error(),
        Some(libc::EIO),
        "write error: {error}"
    );
    assert!(took < bound, "the write/close error took {took:?}");

    // Back alive: new opens work on the same mount.
    proxy.set_liveness(Liveness::Alive);
    let back = Instant::now();
    let mut again = vec![0u8; MIB];
    File::open(mount.join("data/big.bin"))
        .and_then(|f| f.read_exact_at(&mut again, 32 * MIB as u64))
        .expect("read after the server came back");
    assert_eq!(wrong_bytes(&again, &big[32 * MIB..33 * MIB]), 0);
    let mut later = Vec::new();
    File::open(mount.join("other/later.bin"))
        .and_then(|mut f| f.read_to_end(&mut later))
        .expect("read of another object after the server came back");
    assert_eq!(later, pseudo_random_bytes(4, MIB));
    let mut w = File::create(mount.join("data/after.bin")).expect("create after recovery");
    w.write_all(b"after").unwrap();
    close(w).expect("close after recovery");
    eprintln!(
        "{how:?}: recovered in {:?}; proxy: {}",
        back.elapsed(),
        proxy.stats()
    );
    drop(mount);
    assert_eq!(s3.get(&bucket, "data/after.bin"), b"after");
    s3.assert_no_object(&bucket, "data/new.bin", "after the write failed");
    let uploads = uploads_after_aborts(s3, &bucket);
    // The abort itself went to a dead server: reported, not asserted.
    eprintln!("{how:?}: multipart uploads left: {uploads:?}");
}

#[test]
fn blackholed_server_gives_eio_and_the_mount_recovers() {
    dead_server(Liveness::Blackhole);
}

#[test]
fn refusing_server_gives_eio_and_the_mount_recovers() {
    dead_server(Liveness::Refuse);
}

/// A server that accepts connections and never answers, from the start, with the default
/// flags: a program's read of an object the mount never saw, and a write, each get EIO within
/// 30 s in all, however many requests their calls need; a file the cache holds still reads at
/// once; once the server answers, both work with no remount.
#[test]
fn blackholed_from_the_start_fails_within_thirty_seconds_and_recovers() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("faults-blackhole-start");
    let unseen = pseudo_random_bytes(11, MIB);
    let cached = pseudo_random_bytes(12, MIB);
    s3.put(&bucket, "unseen.bin", unseen.clone());
    s3.put(&bucket, "cached.bin", cached.clone());
    let cache = tempfile::tempdir().unwrap();
    let proxy = FaultProxy::start(s3.endpoint(), FaultPlan::none());
    let cache_arg = cache.path().to_str().unwrap().to_string();
    let mount = proxied_mount(s3, &bucket, &proxy, &["--cache", &cache_arg]);
    assert_eq!(fs::read(mount.join("cached.bin")).unwrap(), cached);
    thread::sleep(Duration::from_millis(500)); // the blocks land in the background
    let bound = Duration::from_secs(30);
    proxy.set_liveness(Liveness::Blackhole);

    let t = Instant::now();
    let read = fs::read(mount.join("unseen.bin"));
    let read_took = t.elapsed();
    let t = Instant::now();
    let write = File::create(mount.join("new.bin"))
        .and_then(|mut f| f.write_all(b"lost?").map(|()| f))
        .and_then(close);
    let write_took = t.elapsed();
    let t = Instant::now();
    let again = fs::read(mount.join("cached.bin"));
    let cached_took = t.elapsed();
    eprintln!(
        "black hole from the start: read {:?} in {read_took:?}, write {write:?} in \
         {write_took:?}, cached read in {cached_took:?}",
        read.as_ref().map(Vec::len)
    );
    let err = read.expect_err("a read with no server");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(read_took < bound, "the read took {read_took:?}");
    let err = write.expect_err("a write with no server");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(write_took < bound, "the write took {write_took:?}");
    assert_eq!(again.expect("the cached file reads"), cached);
    assert!(cached_took < Duration::from_secs(2), "{cached_took:?}");

    proxy.set_liveness(Liveness::Alive);
    assert_eq!(fs::read(mount.join("unseen.bin")).unwrap(), unseen);
    let mut w = File::create(mount.join("new.bin")).expect("create once the server is back");
    w.write_all(b"landed").unwrap();
    close(w).expect("close once the server is back");
    assert_eq!(s3.get(&bucket, "new.bin"), b"landed");
}

#[test]
fn debug_log_never_shows_credentials() {
    log_never_shows_credentials("debug-log", &["--debug", "--debug-crt"], None);
}

/// `MOUNTPOINT_LOG=trace` asks for every line of every crate, the signer's and the HTTP
/// stack's included: the clamp under the filter still keeps the secrets out.
#[test]
fn trace_log_from_mountpoint_log_never_shows_credentials() {
    log_never_shows_credentials("trace-log", &[], Some("trace"));
}

/// Mounts with `flags` (and `MOUNTPOINT_LOG=filter`), logging to a directory and to stdout,
/// drives reads, listings, a multipart write, a delete and three injected errors, and checks
/// that neither log holds the secret key, a signature, a credential scope or a header.
fn log_never_shows_credentials(name: &str, flags: &[&str], filter: Option<&str>) {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket(&format!("faults-{name}"));
    s3.put(&bucket, "a.bin", pseudo_random_bytes(6, 3 * MIB));
    s3.put(&bucket, "dir/b.txt", b"bee".to_vec());
    let proxy = FaultProxy::start(s3.endpoint(), FaultPlan::none());
    let logs = tempfile::tempdir().unwrap();
    let log_dir = logs.path().to_str().unwrap();
    let mut args = s3
        .mount_args(&bucket)
        .endpoint(&proxy.url())
        .args(flags.iter().copied())
        .args(["--log-directory", log_dir, "--allow-delete"]);
    if let Some(filter) = filter {
        args = args.env("MOUNTPOINT_LOG", filter);
    }
    let mount = args.mount();
    // Errors go to the log too: a 403, a 500 and a reset among the first requests.
    proxy.script([
        Fault::Status500,
        Fault::ResetBeforeResponse,
        Fault::Status403,
    ]);
    let _ = fs::read_dir(mount.path()).map(|d| d.count());
    let _ = fs::read(mount.join("a.bin"));
    let _ = list_dir(&mount.join("dir"));
    assert_eq!(fs::read(mount.join("a.bin")).unwrap().len(), 3 * MIB);
    let mut w = File::create(mount.join("new.bin")).unwrap();
    w.write_all(&pseudo_random_bytes(7, 9 * MIB)).unwrap();
    close(w).unwrap();
    fs::remove_file(mount.join("dir/b.txt")).unwrap();
    let mut text = mount.log();
    drop(mount);

    for e in fs::read_dir(logs.path()).unwrap().flatten() {
        text.push_str(&String::from_utf8_lossy(&fs::read(e.path()).unwrap()));
    }
    eprintln!(
        "debug log: {} bytes, {} lines; proxy: {}",
        text.len(),
        text.lines().count(),
        proxy.stats()
    );
    assert!(
        text.lines().count() >= 5,
        "the debug log has almost nothing in it:\n{text}"
    );
    assert!(
        text.contains("aws_smithy_runtime"),
        "the SDK's debug lines are in the log:\n{text}"
    );
    let lower = text.to_ascii_lowercase();
    for needle in [
        s3.secret_key(),
        "Signature=",
        "Credential=",
        "Authorization",
    ] {
        assert!(
            !lower.contains(&needle.to_ascii_lowercase()),
            "the debug log contains {needle:?}"
        );
    }
}

/// Runs `ls dir` as the user nobody; returns whether it succeeded, or None if no tool could
/// switch users here.
fn ls_as_nobody(dir: &Path) -> Option<bool> {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "ls"])
        .arg(dir)
        .output()
        .ok()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("ls as nobody: {} {stderr}", out.status);
    if stderr.contains("setpriv:") {
        return None;
    }
    Some(out.status.success())
}

#[test]
fn mount_is_private_unless_allow_other() {
    // SAFETY: getuid cannot fail.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("skipped: switching to another user needs root");
        return;
    }
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("faults-allow-other");
    s3.put(&bucket, "x.txt", b"x".to_vec());
    let private = s3.mount_args(&bucket).mount();
    let Some(ok) = ls_as_nobody(private.path()) else {
        eprintln!("skipped: setpriv cannot switch users here");
        return;
    };
    assert!(
        !ok,
        "another user could list a mount made without --allow-other"
    );
    drop(private);
    let shared = s3.mount_args(&bucket).args(["--allow-other"]).mount();
    assert_eq!(
        ls_as_nobody(shared.path()),
        Some(true),
        "another user could not list a mount made with --allow-other"
    );
}

#[test]
fn truncated_complete_multipart_response_is_whole_or_absent() {
    lost_response("faults-cut-complete", Fault::Truncate, |b| {
        format!("POST /{b}/big.bin?uploadId=")
    });
}
