//! Reading objects through the mount: whole files and ranges, compared with the bytes put
//! through the SDK.

mod common;

use std::fs::{self, File};
use std::io::Read;
use std::sync::Arc;

use common::{
    Rng, S3Server, assert_bytes_eq, pread_full, pseudo_random_bytes, read_from, test_ca_bundle,
};

const MIB: usize = 1024 * 1024;
/// The default part size: reads crossing multiples of it cross GET boundaries.
const PART: usize = 8 * MIB;
/// ~20 MiB, deliberately not a multiple of anything.
const BIG_LEN: usize = 20 * MIB + 12_345;

/// Checks one ranged read against the reference bytes.
#[track_caller]
fn check_range(file: &File, want: &[u8], offset: usize, len: usize) {
    let got = pread_full(file, offset as u64, len);
    let end = (offset + len).min(want.len());
    let expected = if offset >= want.len() {
        &[][..]
    } else {
        &want[offset..end]
    };
    assert_bytes_eq(&got, expected, &format!("pread offset {offset} len {len}"));
}

#[test]
fn whole_file_reads_match_what_was_put() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("read-whole");
    let objects: Vec<(&str, Vec<u8>)> = vec![
        ("empty.bin", Vec::new()),
        ("one.bin", vec![0xA5]),
        ("hello.txt", b"hello, world\n".to_vec()),
        ("page.bin", pseudo_random_bytes(1, 4096)),
        ("odd.bin", pseudo_random_bytes(2, 3 * MIB + 17)),
        ("part.bin", pseudo_random_bytes(3, PART)),
        ("big.bin", pseudo_random_bytes(4, BIG_LEN)),
    ];
    for (k, v) in &objects {
        s3.put(&bucket, k, v.clone());
    }
    let mount = s3.mount_args(&bucket).mount();
    for (k, v) in &objects {
        let got = fs::read(mount.join(k)).unwrap_or_else(|e| panic!("read {k}: {e}"));
        assert_bytes_eq(&got, v, k);
        let md = fs::metadata(mount.join(k)).unwrap();
        assert_eq!(md.len(), v.len() as u64, "size of {k}");
    }
    // A second pass (now possibly from caches) must give the same bytes.
    for (k, v) in objects.iter().rev() {
        assert_bytes_eq(&fs::read(mount.join(k)).unwrap(), v, &format!("{k} again"));
    }
}

#[test]
fn zero_byte_object() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("read-zero");
    s3.put(&bucket, "zero", Vec::new());
    let mount = s3.mount_args(&bucket).mount();

    let md = fs::metadata(mount.join("zero")).unwrap();
    assert!(md.is_file());
    assert_eq!(md.len(), 0);
    let mut f = File::open(mount.join("zero")).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(f.read(&mut buf).unwrap(), 0, "read of an empty file");
    assert!(pread_full(&f, 0, 10).is_empty());
    assert!(pread_full(&f, 5, 10).is_empty());
    assert!(pread_full(&f, 1 << 30, 10).is_empty());
    assert!(fs::read(mount.join("zero")).unwrap().is_empty());
}

#[test]
fn one_byte_object() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("read-one");
    s3.put(&bucket, "one", vec![b'Z']);
    let mount = s3.mount_args(&bucket).mount();

    assert_eq!(fs::metadata(mount.join("one")).unwrap().len(), 1);
    assert_eq!(fs::read(mount.join("one")).unwrap(), b"Z");
    let f = File::open(mount.join("one")).unwrap();
    assert_eq!(pread_full(&f, 0, 1), b"Z");
    assert_eq!(pread_full(&f, 0, 4096), b"Z");
    assert!(pread_full(&f, 1, 10).is_empty(), "read at EOF");
    assert!(pread_full(&f, 2, 10).is_empty(), "read past EOF");
}

#[test]
fn ranged_reads_across_part_boundaries_and_eof() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("read-ranges");
    let data = pseudo_random_bytes(42, BIG_LEN);
    s3.put(&bucket, "big.bin", data.clone());
    let mount = s3.mount_args(&bucket).mount();
    let f = File::open(mount.join("big.bin")).unwrap();
    assert_eq!(f.metadata().unwrap().len(), BIG_LEN as u64);

    let cases: &[(usize, usize)] = &[
        (0, 1),
        (0, 100),
        (1, 4095),
        (4095, 2),
        (4096, 4096),
        (123_457, 65_536),
        (PART - 1, 1),
        (PART - 1, 2),
        (PART, 1),
        (PART - 4096, 8192),
        (PART - 100, 200),
        (PART / 2, PART),        // from the middle of part 0 to the middle of part 1
        (2 * PART - 3, 7),       // across the second boundary
        (PART - 10, PART + 20),  // spans two boundaries
        (3 * MIB + 5, 2 * PART), // a long read over two boundaries
        (0, BIG_LEN),            // everything in one go
        (BIG_LEN - 1, 1),        // last byte
        (BIG_LEN - 10, 100),     // short read at EOF
        (BIG_LEN - PART / 2, PART), // long read past EOF
        (BIG_LEN, 10),           // exactly at EOF
        (BIG_LEN + 1, 10),       // past EOF
        (BIG_LEN + 100 * MIB, 4096), // far past EOF
    ];
    for &(offset, len) in cases {
        check_range(&f, &data, offset, len);
    }
    // The same ranges again in reverse order, on a second handle.
    let g = File::open(mount.join("big.bin")).unwrap();
    for &(offset, len) in cases.iter().rev() {
        check_range(&g, &data, offset, len);
    }
}

#[test]
fn random_and_backward_reads() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("read-random");
    let data = pseudo_random_bytes(99, BIG_LEN);
    s3.put(&bucket, "big.bin", data.clone());
    let mount = s3.mount_args(&bucket).mount();
    let f = File::open(mount.join("big.bin")).unwrap();

    let mut rng = Rng::new(2024);
    for _ in 0..150 {
        let offset = rng.below(BIG_LEN as u64 + 4096) as usize;
        let len = match rng.below(4) {
            0 => 1 + rng.below(16) as usize,
            1 => 1 + rng.below(4096) as usize,
            2 => 1 + rng.below(256 * 1024) as usize,
            _ => 1 + rng.below(3 * MIB as u64) as usize,
        };
        check_range(&f, &data, offset, len);
    }

    // Backwards in 1 MiB steps, from the end to the start.
    let step = MIB;
    let mut end = BIG_LEN;
    while end > 0 {
        let start = end.saturating_sub(step);
        check_range(&f, &data, start, end - start);
        end = start;
    }
}

#[test]
fn sequential_reads_in_small_chunks_and_seeks() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("read-seq");
    let data = pseudo_random_bytes(5, 2 * PART + 999);
    s3.put(&bucket, "seq.bin", data.clone());
    let mount = s3.mount_args(&bucket).mount();

    // `head -c 100`, then close.
    {
        let mut f = File::open(mount.join("seq.bin")).unwrap();
        let mut buf = [0u8; 100];
        f.read_exact(&mut buf).unwrap();
        assert_bytes_eq(&buf, &data[..100], "first 100 bytes");
    }

    // Whole file through read(2) with an odd buffer size.
    let mut f = File::open(mount.join("seq.bin")).unwrap();
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 65_521];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert_bytes_eq(&got, &data, "chunked sequential read");

    // Seek and read to the end from a few places.
    for off in [
        0usize,
        1,
        PART - 1,
        PART,
        PART + 1,
        data.len() - 1,
        data.len(),
    ] {
        let tail = read_from(&mut f, off as u64);
        assert_bytes_eq(&tail, &data[off..], &format!("read to end from {off}"));
    }
}

#[test]
fn concurrent_readers_get_the_right_bytes() {
    const THREADS: usize = 8;
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("read-concurrent");
    let shared = Arc::new(pseudo_random_bytes(1000, 12 * MIB + 7));
    let own: Vec<Arc<Vec<u8>>> = (0..THREADS)
        .map(|i| Arc::new(pseudo_random_bytes(2000 + i as u64, 2 * MIB + i * 1000 + 1)))
        .collect();
    let mut objects = vec![("shared.bin".to_string(), shared.to_vec())];
    for (i, d) in own.iter().enumerate() {
        objects.push((format!("own-{i}.bin"), d.to_vec()));
    }
    s3.put_many(&bucket, objects, 8);
    let mount = s3.mount_args(&bucket).mount();
    let root = mount.path().to_path_buf();

    std::thread::scope(|scope| {
        for (i, mine) in own.iter().enumerate() {
            let shared = shared.clone();
            let mine = mine.clone();
            let root = root.clone();
            scope.spawn(move || {
                let own_path = root.join(format!("own-{i}.bin"));
                let shared_path = root.join("shared.bin");
                let mut rng = Rng::new(77 + i as u64);
                for round in 0..3 {
                    assert_bytes_eq(
                        &fs::read(&own_path).unwrap(),
                        &mine,
                        &format!("thread {i} round {round} own file"),
                    );
                    assert_bytes_eq(
                        &fs::read(&shared_path).unwrap(),
                        &shared,
                        &format!("thread {i} round {round} shared file"),
                    );
                    let sf = File::open(&shared_path).unwrap();
                    let of = File::open(&own_path).unwrap();
                    for _ in 0..15 {
                        let off = rng.below(shared.len() as u64) as usize;
                        let len = 1 + rng.below(512 * 1024) as usize;
                        check_range(&sf, &shared, off, len);
                        let off = rng.below(mine.len() as u64) as usize;
                        let len = 1 + rng.below(256 * 1024) as usize;
                        check_range(&of, &mine, off, len);
                    }
                }
            });
        }
    });

    // One handle shared by all threads, each reading its own slices with pread.
    let f = Arc::new(File::open(root.join("shared.bin")).unwrap());
    std::thread::scope(|scope| {
        for i in 0..THREADS {
            let f = f.clone();
            let shared = shared.clone();
            scope.spawn(move || {
                let slice = shared.len() / THREADS;
                let start = i * slice;
                let end = if i == THREADS - 1 {
                    shared.len()
                } else {
                    start + slice
                };
                let mut off = start;
                while off < end {
                    let len = (end - off).min(300_000);
                    check_range(&f, &shared, off, len);
                    off += len;
                }
            });
        }
    });
}

/// An object replaced while a reader is partway through it: the rest of the read is either
/// the old bytes or EIO, never the new bytes or a mix (the handle pins the ETag it opened).
#[test]
fn object_replaced_mid_read_gives_old_bytes_or_eio() {
    const LEN: usize = 40 * MIB;
    const CHUNK: usize = 64 * 1024;
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("read-replaced");
    let old = pseudo_random_bytes(4000, LEN);
    let new = pseudo_random_bytes(4001, LEN);
    s3.put(&bucket, "obj.bin", old.clone());
    let mount = s3.mount_args(&bucket).mount();
    let mut f = File::open(mount.join("obj.bin")).unwrap();

    let mut buf = vec![0u8; CHUNK];
    let mut offset = 0;
    let mut replaced = false;
    let mut error = None;
    while offset < LEN {
        if !replaced && offset >= 4 * MIB {
            s3.put(&bucket, "obj.bin", new.clone());
            replaced = true;
        }
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                error = Some(e);
                break;
            }
        };
        let got = &buf[..n];
        if got != &old[offset..offset + n] {
            let from_new = got == &new[offset..offset + n];
            panic!(
                "read of {n} bytes at {offset} is not the old object's bytes ({})",
                if from_new {
                    "the new object's"
                } else {
                    "a mix, or neither"
                }
            );
        }
        offset += n;
    }
    match error {
        Some(e) => {
            eprintln!("read failed at {offset} of {LEN} after the replacement: {e}");
            assert_eq!(
                e.raw_os_error(),
                Some(libc::EIO),
                "error after replacement: {e}"
            );
        }
        None => {
            eprintln!("read all {LEN} old bytes across the replacement");
            assert_eq!(offset, LEN, "read stopped early without an error");
        }
    }
    assert_eq!(s3.get(&bucket, "obj.bin").len(), LEN);
}

/// The mount's kernel readahead is 1 MiB by default and what `--read-ahead` says otherwise
/// (read back from the mount's backing device), and reads are right either way.
#[test]
fn kernel_readahead_is_set_from_the_flag() {
    use std::os::unix::fs::MetadataExt;
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("readahead");
    let data = pseudo_random_bytes(31, 3 * MIB + 17);
    s3.put(&bucket, "f.bin", data.clone());
    for (args, want) in [(vec![], "1024"), (vec!["--read-ahead", "12"], "12")] {
        let mount = s3.mount_args(&bucket).args(args).mount();
        let dev = fs::metadata(mount.path()).unwrap().dev();
        let sysfs = format!(
            "/sys/class/bdi/{}:{}/read_ahead_kb",
            libc::major(dev),
            libc::minor(dev)
        );
        // Only root on a writable /sys can set it (mount-s3 then logs and goes on): elsewhere
        // the data is checked and the value is not.
        if !sysfs_writable(&sysfs) {
            eprintln!("{sysfs} is not writable here: readahead not checked");
            assert_bytes_eq(&fs::read(mount.join("f.bin")).unwrap(), &data, want);
            continue;
        }
        // Set just after the mount appears in the mount table: wait for it.
        let mut got = String::new();
        for _ in 0..50 {
            got = fs::read_to_string(&sysfs).unwrap().trim().to_string();
            if got == want {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert_eq!(got, want, "{sysfs}");
        assert_bytes_eq(&fs::read(mount.join("f.bin")).unwrap(), &data, want);
    }
}

/// Whether this process may write `path` under /sys: root, on a /sys not mounted read-only.
fn sysfs_writable(path: &str) -> bool {
    let c = std::ffi::CString::new(path).unwrap();
    // SAFETY: a NUL-terminated path alive for the call; statvfs writes only into `st`.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        libc::geteuid() == 0
            && libc::statvfs(c.as_ptr(), &mut st) == 0
            && st.f_flag & libc::ST_RDONLY == 0
    }
}

/// Over `https://` (the server's TLS port, `--ca-bundle` with the test CA), GETs go through
/// mount-s3's own exchange, and every byte is right: whole, across part boundaries, at
/// random, by two readers at once; no GET was sent again through the SDK.
#[test]
fn reads_over_https_go_through_the_own_exchange_and_match() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("read-https");
    let want = pseudo_random_bytes(77, BIG_LEN);
    s3.put(&bucket, "big.bin", want.clone());
    let bundle = test_ca_bundle();
    let mount = s3
        .mount_args(&bucket)
        .endpoint(s3.https_endpoint())
        .args(["--ca-bundle", bundle.to_str().unwrap(), "--debug"])
        .mount();
    let path = mount.join("big.bin");
    assert_bytes_eq(&fs::read(&path).unwrap(), &want, "whole read over https");
    let file = File::open(&path).unwrap();
    let mut rng = Rng::new(78);
    for _ in 0..20 {
        let offset = rng.below(BIG_LEN as u64) as usize;
        check_range(&file, &want, offset, 1 + rng.below(3 * MIB as u64) as usize);
    }
    check_range(&file, &want, PART - 3, 7);
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (path, want) = (path.clone(), want.clone());
            std::thread::spawn(move || assert_bytes_eq(&fs::read(path).unwrap(), &want, "reader"))
        })
        .collect();
    for reader in readers {
        reader.join().unwrap();
    }
    drop(file);
    let log = mount.unmount_for_log(std::time::Duration::from_secs(10));
    assert!(
        log.contains("own HTTP/1.1 exchange") && log.contains("tls=true"),
        "the exchange was not set up for https:\n{log}"
    );
    assert!(log.contains("GET ok"), "{log}");
    assert!(
        !log.contains("through the SDK"),
        "a GET went through the SDK's client:\n{log}"
    );
}
