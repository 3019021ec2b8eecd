//! `--staged-writes` through real programs against SeaweedFS: numpy's savez (zipfile seeks
//! back), safetensors' save_file (a temporary renamed into place while open), sqlite3 (a transaction of 10,000 inserts), h5py, a log appended and flushed over
//! many reopens, `dd conv=notrunc`, O_RDWR with ftruncate, and an in-place 4 KiB update of a
//! 64 MiB object that must upload kilobytes-plus-one-chunk, not the object (counted at the
//! proxy). Every test checks the bytes in S3 afterwards, read with the S3 client (and the
//! file formats opened from a local copy).

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;

use common::{FaultPlan, FaultProxy, Mount, S3Server, pseudo_random_bytes};

const MIB: usize = 1024 * 1024;

/// A staged mount of `bucket` (optionally through `endpoint`), its staging area in `area`.
fn staged_mount(s3: &S3Server, bucket: &str, area: &Path, endpoint: Option<&str>) -> Mount {
    let mut args = s3.mount_args(bucket).args([
        "--staged-writes",
        "--allow-overwrite",
        "--allow-delete",
        "--staging-dir",
        area.to_str().unwrap(),
    ]);
    if let Some(endpoint) = endpoint {
        args = args.endpoint(endpoint);
    }
    args.mount()
}

/// The tests' Python (with numpy, h5py and safetensors, from scripts/setup-test-env.sh).
fn python() -> String {
    format!("{}/.venv/bin/python3", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `script` with Python in `dir`; panics with its output unless it succeeds. Returns
/// stdout.
fn run_python(dir: &Path, script: &str) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn numpy_savez_sqlite_and_h5py_files_land_whole() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("staged-tools");
    let area = tempfile::tempdir().unwrap();
    let mount = staged_mount(s3, &bucket, area.path(), None);
    let out = run_python(
        mount.path(),
        r#"
import numpy as np, sqlite3, h5py
a = np.arange(200000, dtype=np.int64)
np.savez("arrays.npz", a=a, b=a * 3)
z = np.load("arrays.npz")
assert (z["a"] == a).all() and (z["b"] == a * 3).all()
con = sqlite3.connect("t.db")
con.execute("create table t(x integer, y text)")
with con:
    con.executemany("insert into t values (?, ?)", [(i, str(i)) for i in range(10000)])
con.close()
con = sqlite3.connect("t.db")
print(con.execute("select count(*), sum(x) from t").fetchone())
con.close()
with h5py.File("data.h5", "w") as f:
    f.create_dataset("x", data=a.reshape(400, 500), chunks=(50, 50))
    f["x"][10:20, 10:20] = -1
with h5py.File("data.h5", "r") as f:
    print(int(f["x"][15, 15]), int(f["x"][399, 499]))
"#,
    );
    assert_eq!(out, "(10000, 49995000)\n-1 199999\n");
    drop(mount);
    // What S3 holds, opened from local copies.
    let local = tempfile::tempdir().unwrap();
    for name in ["arrays.npz", "t.db", "data.h5"] {
        std::fs::write(local.path().join(name), s3.get(&bucket, name)).unwrap();
    }
    let out = run_python(
        local.path(),
        r#"
import numpy as np, sqlite3, h5py
z = np.load("arrays.npz")
print(int(z["b"][199999]))
print(sqlite3.connect("t.db").execute("select count(*) from t").fetchone()[0])
with h5py.File("data.h5", "r") as f:
    print(int(f["x"][15, 15]), int(f["x"][()].sum()))
"#,
    );
    let sum: i64 = (0..200000i64).sum::<i64>()
        - (10 * 10)
        - (10..20)
            .flat_map(|r| (10..20).map(move |c| r * 500 + c))
            .sum::<i64>();
    assert_eq!(out, format!("599997\n10000\n-1 {sum}\n"));
    assert!(
        s3.multipart_uploads(&bucket).is_empty(),
        "no multipart upload left behind"
    );
}

/// safetensors' `save_file` (0.8) writes a temporary file beside the target, grows it with
/// ftruncate and renames it into place before closing it (tempfile's `persist`): the model
/// lands whole under its own name, a second save replaces it, and no temporary key is ever
/// left (the rename used to be EPERM: "writes not committed yet").
#[test]
fn safetensors_saves_land_whole_under_their_name() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("staged-safetensors");
    let area = tempfile::tempdir().unwrap();
    let mount = staged_mount(s3, &bucket, area.path(), None);
    let script = r#"
import numpy as np, os
from safetensors.numpy import save_file, load_file
w = {"w%d" % i: np.arange(i, i + 300000, dtype=np.float32) for i in range(4)}
save_file(w, "model.safetensors")
w = {k: v * 2 for k, v in w.items()}
save_file(w, "model.safetensors")
got = load_file("model.safetensors")
assert sorted(got) == sorted(w) and all((got[k] == w[k]).all() for k in w)
print(sorted(os.listdir(".")))
"#;
    assert_eq!(run_python(mount.path(), script), "['model.safetensors']\n");
    drop(mount);
    assert_eq!(s3.list_keys(&bucket), vec!["model.safetensors"]);
    let local = tempfile::tempdir().unwrap();
    let saved = s3.get(&bucket, "model.safetensors");
    std::fs::write(local.path().join("model.safetensors"), saved).unwrap();
    let check = r#"
from safetensors.numpy import load_file
got = load_file("model.safetensors")
print(int(sum(float(v.astype("float64").sum()) for v in got.values())))
"#;
    let want: f64 = (0..4)
        .map(|i| (i..i + 300000).map(|x| 2.0 * x as f64).sum::<f64>())
        .sum();
    assert_eq!(
        run_python(local.path(), check),
        format!("{}\n", want as i64)
    );
    assert!(s3.multipart_uploads(&bucket).is_empty());
}

#[test]
fn a_log_appended_over_many_reopens_holds_every_line() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("staged-log");
    let area = tempfile::tempdir().unwrap();
    let mount = staged_mount(s3, &bucket, area.path(), None);
    let path = mount.join("train.log");
    let mut want = String::new();
    // 200 lines, each its own open, write, flush and close, back to back: the next open
    // often comes before the kernel's release of the last handle.
    for line in 0..200 {
        let mut log = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("reopen {line}: {e}"));
        let text = format!("step {line} loss {}\n", line * 7);
        log.write_all(text.as_bytes()).unwrap();
        log.flush().unwrap();
        want.push_str(&text);
        drop(log);
        if line % 50 == 49 {
            assert_eq!(std::fs::read_to_string(&path).unwrap(), want, "line {line}");
        }
    }
    drop(mount);
    assert_eq!(
        String::from_utf8(s3.get(&bucket, "train.log")).unwrap(),
        want
    );
}

#[test]
fn dd_notrunc_and_ftruncate_change_the_object_in_place() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("staged-inplace");
    let original = pseudo_random_bytes(3, 3 * MIB);
    s3.put(&bucket, "disk.img", original.clone());
    let area = tempfile::tempdir().unwrap();
    let mount = staged_mount(s3, &bucket, area.path(), None);
    let patch = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(patch.path(), vec![0x5Au8; 8192]).unwrap();
    let status = Command::new("dd")
        .arg(format!("if={}", patch.path().display()))
        .arg(format!("of={}", mount.join("disk.img").display()))
        .args(["bs=4096", "seek=100", "conv=notrunc", "status=none"])
        .status()
        .unwrap();
    assert!(status.success());
    let mut want = original;
    want[100 * 4096..102 * 4096].fill(0x5A);
    assert!(std::fs::read(mount.join("disk.img")).unwrap() == want);
    // O_RDWR: a write, then ftruncate shorter, then longer (zeros).
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(mount.join("disk.img"))
        .unwrap();
    file.seek(SeekFrom::Start(10)).unwrap();
    file.write_all(b"patched").unwrap();
    file.set_len(MIB as u64).unwrap();
    file.set_len(MIB as u64 + 5).unwrap();
    file.sync_all().unwrap();
    drop(file);
    want[10..17].copy_from_slice(b"patched");
    want.truncate(MIB);
    want.extend_from_slice(&[0; 5]);
    drop(mount);
    assert!(s3.get(&bucket, "disk.img") == want);
}

#[test]
fn an_in_place_update_of_a_large_object_sends_one_chunk_not_the_object() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("staged-copy");
    let original = pseudo_random_bytes(4, 64 * MIB);
    s3.put(&bucket, "model.bin", original.clone());
    let proxy = FaultProxy::start(s3.endpoint(), FaultPlan::none());
    let area = tempfile::tempdir().unwrap();
    let mount = staged_mount(s3, &bucket, area.path(), Some(&proxy.url()));
    proxy.record_requests();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(mount.join("model.bin"))
        .unwrap();
    file.seek(SeekFrom::Start(30 * MIB as u64 + 12345)).unwrap();
    file.write_all(&[7u8; 4096]).unwrap();
    drop(file);
    let recorded = proxy.recorded();
    let sent: u64 = recorded
        .iter()
        .filter(|r| r.line.starts_with("PUT ") && r.header("x-amz-copy-source").is_none())
        .filter_map(|r| r.header("content-length")?.parse::<u64>().ok())
        .sum();
    let copies = recorded
        .iter()
        .filter(|r| r.header("x-amz-copy-source").is_some())
        .count();
    let fetched: u64 = recorded
        .iter()
        .filter(|r| r.line.starts_with("GET ") && r.header("range").is_some())
        .count() as u64;
    assert!(
        sent <= 6 * MIB as u64 && sent >= 5 * MIB as u64,
        "uploaded {sent} bytes for a 4 KiB change of 64 MiB"
    );
    assert!(
        copies >= 2,
        "the unchanged stretches are copied on the server: {copies}"
    );
    assert!(fetched >= 1, "the chunk's old bytes were fetched");
    drop(mount);
    let mut want = original;
    want[30 * MIB + 12345..30 * MIB + 12345 + 4096].fill(7);
    assert!(s3.get(&bucket, "model.bin") == want);
    eprintln!("in-place 4 KiB update of 64 MiB: {sent} bytes uploaded, {copies} part copies");
}

#[test]
fn a_staged_file_replaced_meanwhile_is_not_overwritten() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("staged-race");
    s3.put(&bucket, "shared.txt", b"version one".to_vec());
    let area = tempfile::tempdir().unwrap();
    let mount = staged_mount(s3, &bucket, area.path(), None);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(mount.join("shared.txt"))
        .unwrap();
    file.write_all(b"VERSION").unwrap();
    // Another reader of the mount sees the staged content at once.
    assert_eq!(
        std::fs::read(mount.join("shared.txt")).unwrap(),
        b"VERSION one"
    );
    s3.put(&bucket, "shared.txt", b"another client".to_vec());
    let err = file.sync_all().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop(file);
    assert_eq!(s3.get(&bucket, "shared.txt"), b"another client");
    assert!(s3.multipart_uploads(&bucket).is_empty());
}

/// `--incremental-upload` alone (Mountpoint's flag): an append to a large object uploads the
/// new bytes only (the old object is copied on the server); other partial writes keep the
/// default refusal.
#[test]
fn incremental_upload_appends_send_only_the_new_bytes() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("staged-append");
    let original = pseudo_random_bytes(5, 64 * MIB + 100);
    s3.put(&bucket, "events.log", original.clone());
    let proxy = FaultProxy::start(s3.endpoint(), FaultPlan::none());
    let area = tempfile::tempdir().unwrap();
    let mount = s3
        .mount_args(&bucket)
        .endpoint(&proxy.url())
        .args([
            "--incremental-upload",
            "--allow-overwrite",
            "--staging-dir",
            area.path().to_str().unwrap(),
        ])
        .mount();
    proxy.record_requests();
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(mount.join("events.log"))
        .unwrap();
    log.write_all(&[b'z'; 1000]).unwrap();
    drop(log);
    let sent: u64 = proxy
        .recorded()
        .iter()
        .filter(|r| r.line.starts_with("PUT ") && r.header("x-amz-copy-source").is_none())
        .filter_map(|r| r.header("content-length")?.parse::<u64>().ok())
        .sum();
    assert_eq!(sent, 1000, "an append of 1000 bytes to a 64 MiB object");
    eprintln!(
        "append of 1000 bytes to {} bytes: {sent} bytes uploaded",
        original.len()
    );
    // Without --staged-writes, a write elsewhere than the end is still refused.
    let err = std::fs::OpenOptions::new()
        .write(true)
        .open(mount.join("events.log"))
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    drop(mount);
    let mut want = original;
    want.extend_from_slice(&[b'z'; 1000]);
    assert!(s3.get(&bucket, "events.log") == want);
}
