//! Directories through the mount: implicit directories from common prefixes, `dir/`
//! markers, names that are both a key and a prefix, large directories, missing paths and
//! `--prefix`.

mod common;

use std::collections::BTreeSet;
use std::fs::{self, File};

use common::{S3Server, assert_listing, assert_typed_listing, expect_errno, list_dir};

#[test]
fn nested_implicit_directories() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("list-nested");
    s3.put(&bucket, "a/b/c/file.txt", b"deep file".to_vec());
    s3.put(&bucket, "a/b/other.txt", b"other".to_vec());
    s3.put(&bucket, "a/top.txt", b"top".to_vec());
    s3.put(&bucket, "root.txt", b"root".to_vec());
    let mount = s3.mount_args(&bucket).mount();

    assert!(fs::metadata(mount.path()).unwrap().is_dir());
    assert_typed_listing(mount.path(), &[("a", 'd'), ("root.txt", 'f')]);
    assert_typed_listing(&mount.join("a"), &[("b", 'd'), ("top.txt", 'f')]);
    assert_typed_listing(&mount.join("a/b"), &[("c", 'd'), ("other.txt", 'f')]);
    assert_typed_listing(&mount.join("a/b/c"), &[("file.txt", 'f')]);

    assert_eq!(
        fs::read(mount.join("a/b/c/file.txt")).unwrap(),
        b"deep file"
    );
    assert_eq!(fs::read(mount.join("a/b/other.txt")).unwrap(), b"other");
    assert_eq!(fs::read(mount.join("a/top.txt")).unwrap(), b"top");
    assert_eq!(fs::read(mount.join("root.txt")).unwrap(), b"root");

    // Looked up directly, without listing the parents first (fresh mount).
    drop(mount);
    let mount = s3.mount_args(&bucket).mount();
    assert_eq!(
        fs::read(mount.join("a/b/c/file.txt")).unwrap(),
        b"deep file"
    );
    assert!(fs::metadata(mount.join("a/b/c")).unwrap().is_dir());
    assert!(fs::metadata(mount.join("a/b")).unwrap().is_dir());

    // Paths with `.` and `..` resolve as usual.
    assert_eq!(
        fs::read(mount.join("a/b/../b/c/./file.txt")).unwrap(),
        b"deep file"
    );
}

#[test]
fn directory_markers() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("list-markers");
    s3.put(&bucket, "empty/", Vec::new());
    s3.put(&bucket, "full/", Vec::new());
    s3.put(&bucket, "full/inside.txt", b"inside".to_vec());
    s3.put(&bucket, "deep/er/", Vec::new());
    let mount = s3.mount_args(&bucket).mount();

    assert_typed_listing(
        mount.path(),
        &[("deep", 'd'), ("empty", 'd'), ("full", 'd')],
    );
    // A marker alone is an empty directory; the marker itself is never an entry.
    assert_typed_listing(&mount.join("empty"), &[]);
    assert_typed_listing(&mount.join("full"), &[("inside.txt", 'f')]);
    assert_typed_listing(&mount.join("deep"), &[("er", 'd')]);
    assert_typed_listing(&mount.join("deep/er"), &[]);
    assert_eq!(fs::read(mount.join("full/inside.txt")).unwrap(), b"inside");
}

#[test]
fn name_that_is_a_key_and_a_prefix_is_a_directory() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("list-shadow");
    s3.put(&bucket, "x", b"i am a file".to_vec());
    s3.put(&bucket, "x/y", b"why".to_vec());
    s3.put(&bucket, "x2", b"also a file".to_vec());
    s3.put(&bucket, "x2/deeper/z", b"zed".to_vec());
    // (A key `k` with a marker `k/` cannot be tested here: SeaweedFS refuses `k/` when `k`
    // exists, and hides the marker when `k` is put after it.)
    s3.put(&bucket, "plain", b"just a file".to_vec());
    let mount = s3.mount_args(&bucket).mount();

    assert_typed_listing(mount.path(), &[("plain", 'f'), ("x", 'd'), ("x2", 'd')]);
    assert_typed_listing(&mount.join("x"), &[("y", 'f')]);
    assert_typed_listing(&mount.join("x2"), &[("deeper", 'd')]);
    assert_eq!(fs::read(mount.join("x2/deeper/z")).unwrap(), b"zed");
    assert_eq!(fs::read(mount.join("x/y")).unwrap(), b"why");
    assert_eq!(fs::read(mount.join("plain")).unwrap(), b"just a file");
    // Reading the directory as a file fails.
    assert!(fs::read(mount.join("x")).is_err());
}

#[test]
fn thousands_of_keys_in_one_directory() {
    const N: usize = 2500;
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("list-many");
    let mut objects: Vec<(String, Vec<u8>)> = (0..N)
        .map(|i| {
            (
                format!("many/f{i:05}.txt"),
                format!("content {i}").into_bytes(),
            )
        })
        .collect();
    // Two subdirectories whose names sort into the middle and the end of the listing.
    objects.push(("many/f01250.d/inner.txt".into(), b"in d".to_vec()));
    objects.push(("many/zz-sub/inner.txt".into(), b"in zz".to_vec()));
    objects.push(("sibling.txt".into(), b"sibling".to_vec()));
    s3.put_many(&bucket, objects, 32);
    assert_eq!(s3.list_keys(&bucket).len(), N + 3, "objects in the bucket");

    let mut want: BTreeSet<String> = (0..N).map(|i| format!("f{i:05}.txt")).collect();
    want.insert("f01250.d".into());
    want.insert("zz-sub".into());
    // As a directory bucket (its listings read whole before serving, since they come in
    // no order), the same bucket lists the same.
    let directory = s3
        .mount_args(&bucket)
        .args(["--bucket-type", "directory"])
        .mount();
    let got = list_dir(&directory.join("many"));
    assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), want);
    assert_listing(directory.path(), &["many", "sibling.txt"]);
    drop(directory);

    let mount = s3.mount_args(&bucket).mount();
    assert_listing(mount.path(), &["many", "sibling.txt"]);
    for pass in 0..2 {
        let got = list_dir(&mount.join("many")); // panics on a name listed twice
        assert_eq!(got.len(), N + 2, "pass {pass}: number of entries");
        let got: BTreeSet<String> = got.into_iter().collect();
        let missing: Vec<_> = want.difference(&got).take(10).collect();
        let extra: Vec<_> = got.difference(&want).take(10).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "pass {pass}: missing {missing:?}, unexpected {extra:?}"
        );
    }
    assert!(fs::metadata(mount.join("many/f01250.d")).unwrap().is_dir());
    assert!(fs::metadata(mount.join("many/zz-sub")).unwrap().is_dir());
    for i in [0usize, 1, 999, 1000, 1001, 1999, 2000, 2499] {
        let p = mount.join(format!("many/f{i:05}.txt"));
        let want = format!("content {i}");
        assert_eq!(fs::metadata(&p).unwrap().len(), want.len() as u64, "{p:?}");
        assert_eq!(fs::read(&p).unwrap(), want.as_bytes(), "{p:?}");
    }
}

#[test]
fn missing_paths_are_enoent() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("list-enoent");
    s3.put(&bucket, "dir/file.txt", b"here".to_vec());
    s3.put(&bucket, "abc/def", b"prefix test".to_vec());
    let mount = s3.mount_args(&bucket).mount();
    // The mount works and the present names are there (so the errors below mean something).
    assert_listing(mount.path(), &["abc", "dir"]);
    assert_eq!(fs::read(mount.join("dir/file.txt")).unwrap(), b"here");

    let enoent = |rel: &str| {
        let p = mount.join(rel);
        assert_eq!(
            expect_errno(fs::metadata(&p), &format!("stat {rel}")),
            libc::ENOENT,
            "stat {rel}"
        );
        assert_eq!(
            expect_errno(File::open(&p), &format!("open {rel}")),
            libc::ENOENT,
            "open {rel}"
        );
        assert_eq!(
            expect_errno(fs::read_dir(&p), &format!("read_dir {rel}")),
            libc::ENOENT,
            "read_dir {rel}"
        );
    };
    enoent("missing.txt");
    enoent("missing-dir");
    enoent("missing-dir/deeper/file");
    enoent("dir/missing.txt");
    enoent("dir/file.tx");
    enoent("dir/file.txt.bak");
    // Prefixes that do not end at a '/' are not directories.
    enoent("ab");
    enoent("abc/de");
    enoent("di");
    // Asked twice (a negative cache must not turn it into something else).
    enoent("missing.txt");

    // Below a regular file: the kernel says ENOTDIR.
    assert_eq!(
        expect_errno(
            fs::metadata(mount.join("dir/file.txt/child")),
            "stat under a file"
        ),
        libc::ENOTDIR
    );
}

#[test]
fn prefix_option_shows_only_keys_under_the_prefix() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("list-prefix");
    s3.put(&bucket, "pfx/a.txt", b"a under prefix".to_vec());
    s3.put(&bucket, "pfx/sub/b.txt", b"b under prefix".to_vec());
    s3.put(&bucket, "pfx/sub/deeper/c.txt", b"c".to_vec());
    s3.put(&bucket, "other.txt", b"outside".to_vec());
    s3.put(&bucket, "pfxother/d.txt", b"similar name, outside".to_vec());
    s3.put(&bucket, "pfx2.txt", b"outside too".to_vec());
    s3.put(&bucket, "a.txt", b"root a, outside".to_vec());

    let mount = s3.mount_args(&bucket).args(["--prefix", "pfx/"]).mount();
    assert_typed_listing(mount.path(), &[("a.txt", 'f'), ("sub", 'd')]);
    assert_typed_listing(&mount.join("sub"), &[("b.txt", 'f'), ("deeper", 'd')]);
    assert_eq!(fs::read(mount.join("a.txt")).unwrap(), b"a under prefix");
    assert_eq!(
        fs::read(mount.join("sub/b.txt")).unwrap(),
        b"b under prefix"
    );
    assert_eq!(fs::read(mount.join("sub/deeper/c.txt")).unwrap(), b"c");
    for outside in ["other.txt", "pfx", "pfxother", "pfx2.txt", "pfx/a.txt"] {
        assert_eq!(
            expect_errno(fs::metadata(mount.join(outside)), outside),
            libc::ENOENT,
            "{outside} must not be visible under --prefix pfx/"
        );
    }
    drop(mount);

    // A nested prefix.
    let mount = s3
        .mount_args(&bucket)
        .args(["--prefix", "pfx/sub/"])
        .mount();
    assert_typed_listing(mount.path(), &[("b.txt", 'f'), ("deeper", 'd')]);
    assert_eq!(fs::read(mount.join("deeper/c.txt")).unwrap(), b"c");
}

#[test]
fn hostile_key_names_list_and_read_through_the_server() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("list-hostile");
    let kilo = format!(
        "long/{}/{}/{}/{}/{}",
        "a".repeat(250),
        "b".repeat(250),
        "c".repeat(250),
        "d".repeat(250),
        "e".repeat(15)
    );
    assert_eq!(kilo.len(), 1024);
    let deep: String = (0..60).map(|i| format!("n{i}/")).collect::<String>() + "leaf.txt";
    let control = [
        "ctl/new\nline",
        "ctl/tab\there",
        "ctl/esc\x1b[31mred",
        "ctl/del\x7f",
        "ctl/percent%2F and space",
        "ctl/q?uery&amp=1#frag",
        "ctl/ünïcödé ✓",
    ];
    let mut objects: Vec<(String, Vec<u8>)> = control
        .iter()
        .map(|k| (k.to_string(), format!("data of {k:?}").into_bytes()))
        .collect();
    objects.push((kilo.clone(), b"kilo".to_vec()));
    objects.push((deep.clone(), b"deep".to_vec()));
    s3.put_many(&bucket, objects.clone(), 8);

    let mount = s3.mount_args(&bucket).mount();
    let want: BTreeSet<String> = control.iter().map(|k| k[4..].to_string()).collect();
    let got: BTreeSet<String> = list_dir(&mount.join("ctl")).into_iter().collect();
    assert_eq!(got, want);
    for (key, data) in &objects {
        assert_eq!(
            fs::read(mount.join(key)).unwrap_or_else(|e| panic!("read {key:?}: {e}")),
            *data,
            "{key:?}"
        );
    }
    // The deep key's directories all list their one child.
    let mut dir = mount.join("n0");
    for i in 1..60 {
        assert_eq!(list_dir(&dir), [format!("n{i}")], "{}", dir.display());
        dir = dir.join(format!("n{i}"));
    }
    assert_eq!(list_dir(&dir), ["leaf.txt"]);
}

/// `ls -l` twice within `--metadata-ttl`: the second costs no LIST (the pages are
/// remembered) and no HEAD (readdirplus carries the stats); a file this mount writes or
/// deletes shows in the very next listing; with `minimal` (the default) every listing asks.
#[test]
fn a_second_listing_within_the_ttl_asks_nothing_of_s3() {
    use common::{FaultPlan, FaultProxy};
    use std::os::unix::fs::MetadataExt;
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("list-remembered");
    let objects: Vec<(String, Vec<u8>)> = (0..1500)
        .map(|i| (format!("d/f{i:04}"), vec![b'x'; i % 7]))
        .collect();
    s3.put_many(&bucket, objects, 32);
    let ls_l = |dir: &std::path::Path| -> u64 {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().size())
            .sum()
    };
    let requests = |proxy: &FaultProxy, what: &str| {
        proxy
            .recorded()
            .iter()
            .filter(|r| match what {
                "LIST" => r.line.starts_with("GET ") && r.line.contains("list-type"),
                _ => r.line.starts_with("HEAD "),
            })
            .count()
    };
    let proxy = FaultProxy::start(s3.endpoint(), FaultPlan::none());
    let mount = s3
        .mount_args(&bucket)
        .endpoint(&proxy.url())
        .args(["--metadata-ttl", "60", "--allow-delete"])
        .mount();
    let dir = mount.join("d");
    let total = ls_l(&dir);
    proxy.record_requests();
    assert_eq!(ls_l(&dir), total);
    assert_eq!(requests(&proxy, "LIST"), 0, "second ls -l: LISTs");
    assert_eq!(requests(&proxy, "HEAD"), 0, "second ls -l: HEADs");
    // Our own changes show at once.
    fs::write(dir.join("new.txt"), b"new").unwrap();
    fs::remove_file(dir.join("f0003")).unwrap();
    let names = list_dir(&dir);
    assert!(names.contains(&"new.txt".to_string()));
    assert!(!names.contains(&"f0003".to_string()));
    assert_eq!(names.len(), 1500);
    drop(mount);

    let proxy = FaultProxy::start(s3.endpoint(), FaultPlan::none());
    let mount = s3.mount_args(&bucket).endpoint(&proxy.url()).mount();
    let dir = mount.join("d");
    ls_l(&dir);
    proxy.record_requests();
    ls_l(&dir);
    assert_eq!(
        requests(&proxy, "LIST"),
        2,
        "minimal: the second ls -l lists again"
    );
}

/// A tree walk (`find`) lists each directory once, whether its listing came from the walk's
/// readahead (siblings listed ahead in the background) or from its own readdir, and sees
/// every file.
#[test]
fn a_tree_walk_lists_each_directory_once_and_sees_everything() {
    use common::{FaultPlan, FaultProxy};
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("list-walk");
    let objects: Vec<(String, Vec<u8>)> = (0..30)
        .flat_map(|d| (0..20).map(move |f| (format!("d{d:02}/f{f:02}"), vec![b'x'; 3])))
        .collect();
    s3.put_many(&bucket, objects.clone(), 32);
    for ttl in [None, Some("60")] {
        let proxy = FaultProxy::start(s3.endpoint(), FaultPlan::none());
        proxy.record_requests();
        let mut args = s3.mount_args(&bucket).endpoint(&proxy.url());
        if let Some(ttl) = ttl {
            args = args.args(["--metadata-ttl", ttl]);
        }
        let mount = args.mount();
        let found = std::process::Command::new("find")
            .arg(".")
            .arg("-type")
            .arg("f")
            .current_dir(mount.path())
            .output()
            .unwrap();
        let mut names: Vec<String> = String::from_utf8(found.stdout)
            .unwrap()
            .lines()
            .map(|l| l.trim_start_matches("./").to_string())
            .collect();
        names.sort();
        let want: Vec<String> = objects.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(names, want, "{ttl:?}");
        // Directory listings (pages of up to 1000 keys; lookups ask for one key).
        let listings: Vec<String> = proxy
            .recorded()
            .iter()
            .filter(|r| r.line.contains("list-type") && r.line.contains("max-keys=1000"))
            .map(|r| r.line.clone())
            .collect();
        assert_eq!(
            listings.len(),
            31,
            "{ttl:?}: root + 30 directories, once each: {listings:#?}"
        );
    }
}
