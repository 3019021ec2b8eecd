//! The command line's tests: defaults, values, refusals, and random lines that must not panic.

use super::validate::unescape_mountinfo;
use super::values::Ttl;
use super::*;

fn parse(args: &[&str]) -> Result<Args, clap::Error> {
    Args::try_parse_from(std::iter::once("mount-s3").chain(args.iter().copied()))
}

#[test]
fn s3_uris_become_bucket_and_prefix() {
    let dir = std::env::temp_dir();
    let d = dir.to_str().unwrap();
    let mut args = parse(&["s3://bucket/a/b/", d]).unwrap();
    args.validate().unwrap();
    assert_eq!(args.bucket, "bucket");
    assert_eq!(args.fs_config().prefix, "a/b/");
    assert_eq!(args.s3_config().bucket, "bucket");
    let mut whole = parse(&["s3://bucket", d]).unwrap();
    whole.validate().unwrap();
    assert_eq!(
        (whole.bucket.as_str(), whole.prefix.as_deref()),
        ("bucket", None)
    );
    let mut both = parse(&["s3://bucket/a/", d, "--prefix", "b/"]).unwrap();
    assert!(both.validate().unwrap_err().contains("--prefix"));
    assert!(parse(&["s3://bucket/no-slash", d]).is_err());
    assert!(
        parse(&["Mixed_Case.bucket", d]).is_ok(),
        "Mountpoint's name rule"
    );
}

#[test]
fn refused_combinations_are_named_in_one_line() {
    let dir = std::env::temp_dir();
    let d = dir.to_str().unwrap();
    for (extra, named) in [
        (vec!["--cache-xz", "s3://xz-bucket/p/"], "--cache-xz"),
        (vec!["--cache-xz", "x"], "--cache-xz"),
        (
            vec![
                "--sse",
                "AES256",
                "--sse-kms-key-id",
                "arn:aws:kms:r:1:key/k",
            ],
            "--sse-kms-key-id",
        ),
        (vec!["--write-part-size", "1048576"], "5 MiB"),
    ] {
        let mut argv = vec!["bucket", d];
        argv.extend(&extra);
        let err = parse(&argv).unwrap().validate().unwrap_err();
        assert!(
            err.contains(named) && !err.contains('\n'),
            "{extra:?}: {err}"
        );
    }
    let mut warned = parse(&[
        "bucket",
        d,
        "--bind",
        "eth0",
        "--bind",
        "eth1",
        "--maximum-throughput-gbps",
        "100",
    ])
    .unwrap();
    warned.validate().unwrap();
    assert_eq!(
        warned.bind.as_deref(),
        Some(&["eth0".to_string(), "eth1".to_string()][..])
    );
    assert_eq!(
        warned.s3_config().bind,
        ["eth0".to_string(), "eth1".to_string()]
    );
    let mut small_reads = parse(&["bucket", d, "--read-only", "--part-size", "1048576"]).unwrap();
    small_reads.validate().unwrap();
    assert_eq!(small_reads.fs_config().read_part_size, 1024 * 1024);
}

#[test]
fn mountpoint_values_mean_what_they_mean_there() {
    let cached = |extra: &[&str]| {
        let mut argv = vec!["bkt", "/m", "--cache", "/c"];
        argv.extend(extra);
        parse(&argv).unwrap()
    };
    let kib = cached(&["--cache-block-size", "4096"]);
    assert_eq!(
        kib.cache_config().unwrap().block_size,
        4 * 1024 * 1024,
        "KiB"
    );
    assert_eq!(cached(&[]).cache_config().unwrap().block_size, 1024 * 1024);
    assert!(
        parse(&[
            "bkt",
            "/m",
            "--cache",
            "/c",
            "--cache-block-size",
            "1048576"
        ])
        .is_err()
    );
    let off = cached(&["--max-cache-size", "0"]);
    assert!(
        off.cache_config().is_none(),
        "--max-cache-size 0 turns the cache off"
    );
    assert_eq!(off.fs_config().metadata_ttl, MINIMAL_TTL);
    assert!(!off.fs_config().passthrough);
    // 0 is minimal, as in Mountpoint: a 1 s stat for the kernel's bursts, an open that asks
    // S3 again, and no negative entries.
    let zero = parse(&["bkt", "/m", "--metadata-ttl", "0"])
        .unwrap()
        .fs_config();
    assert_eq!(zero.metadata_ttl, MINIMAL_TTL);
    assert_eq!(zero.negative_ttl(), Duration::ZERO);
    assert_eq!(zero.open_revalidates_after, Some(OPEN_REVALIDATE_AFTER));
    let kept = parse(&["bkt", "/m", "--negative-metadata-ttl", "7"])
        .unwrap()
        .fs_config();
    assert_eq!(kept.negative_ttl(), Duration::from_secs(7));
    let cached_ttl = cached(&[]).fs_config();
    assert_eq!(cached_ttl.open_revalidates_after, None, "60 s with a cache");
    let negative = parse(&[
        "bkt",
        "/m",
        "--metadata-ttl",
        "300",
        "--negative-metadata-ttl",
        "5",
    ])
    .unwrap();
    let fs = negative.fs_config();
    assert_eq!(
        (fs.metadata_ttl.as_secs(), fs.negative_ttl().as_secs()),
        (300, 5)
    );
    assert_eq!(
        parse(&["bkt", "/m", "--metadata-ttl", "300"])
            .unwrap()
            .fs_config()
            .negative_ttl()
            .as_secs(),
        300
    );
    let split = parse(&[
        "bkt",
        "/m",
        "--read-part-size",
        "1048576",
        "--write-part-size",
        "16777216",
    ])
    .unwrap();
    let fs = split.fs_config();
    assert_eq!((fs.read_part_size, fs.write_part_size), (1 << 20, 16 << 20));
    assert!(
        parse(&[
            "bkt",
            "/m",
            "--part-size",
            "8388608",
            "--read-part-size",
            "1048576"
        ])
        .is_err()
    );
    let short = parse(&["bkt", "/m", "-d", "-l", "/var/log/x", "-f"]).unwrap();
    assert!(short.debug && short.foreground);
    assert_eq!(
        short.log_directory.as_deref(),
        Some(std::path::Path::new("/var/log/x"))
    );
    assert!(parse(&["bkt", "/m", "--no-log", "--debug"]).is_err());
    assert!(
        parse(&["bkt", "/m", "--sse-kms-key-id", "arn:aws:kms:r:1:key/k"]).is_err(),
        "needs --sse"
    );
    assert!(
        parse(&["bkt", "/m", "--otlp-export-interval", "5"]).is_err(),
        "needs --otlp-endpoint"
    );
    let headers = parse(&[
        "bkt",
        "/m",
        "--sse",
        "aws:kms",
        "--sse-kms-key-id",
        "arn:aws:kms:r:1:key/k",
        "--storage-class",
        "STANDARD_IA",
        "--requester-pays",
        "--expected-bucket-owner",
        "111122223333",
        "--user-agent-prefix",
        "job/7",
        "--infer-content-type",
        "--transfer-acceleration",
        "--dual-stack",
        "--upload-checksums",
        "off",
    ])
    .unwrap()
    .s3_config();
    assert_eq!(headers.sse.as_deref(), Some("aws:kms"));
    assert_eq!(
        headers.sse_kms_key_id.as_deref(),
        Some("arn:aws:kms:r:1:key/k")
    );
    assert_eq!(headers.storage_class.as_deref(), Some("STANDARD_IA"));
    assert_eq!(
        headers.expected_bucket_owner.as_deref(),
        Some("111122223333")
    );
    assert_eq!(headers.user_agent_prefix.as_deref(), Some("job/7"));
    assert!(headers.requester_pays && headers.infer_content_type);
    assert!(headers.transfer_acceleration && headers.dual_stack);
    assert_eq!(
        headers.upload_checksums,
        crate::s3::config::UploadChecksums::Off
    );
}

#[test]
fn outposts_take_no_checksums_unless_asked() {
    use crate::s3::config::UploadChecksums;
    let outposts = "arn:aws:s3-outposts:us-east-1:555555555555:outpost/op-1/accesspoint/ap";
    let checksums = |argv: &[&str]| parse(argv).unwrap().s3_config().upload_checksums;
    assert_eq!(checksums(&[outposts, "/m"]), UploadChecksums::Off);
    assert_eq!(checksums(&["bkt", "/m"]), UploadChecksums::Crc32c);
    let asked = [outposts, "/m", "--upload-checksums", "crc64nvme"];
    assert_eq!(checksums(&asked), UploadChecksums::Crc64Nvme);
    let access_point = "arn:aws:s3:us-east-1:555555555555:accesspoint/ap";
    assert_eq!(checksums(&[access_point, "/m"]), UploadChecksums::Crc32c);
}

#[test]
fn aws_max_attempts_is_honoured_or_warned_about() {
    use super::layers::max_attempts;
    use crate::s3::config::DEFAULT_MAX_ATTEMPTS;
    assert_eq!(max_attempts(None), DEFAULT_MAX_ATTEMPTS);
    assert_eq!(max_attempts(Some("10")), 10);
    assert_eq!(max_attempts(Some(" 2 ")), 2);
    for bad in ["0", "101", "ten", ""] {
        assert_eq!(max_attempts(Some(bad)), DEFAULT_MAX_ATTEMPTS, "{bad}");
    }
}

#[test]
fn defaults_match_mountpoint() {
    let args = parse(&["bucket", "/mnt"]).unwrap();
    assert_eq!(args.part_size, DEFAULT_PART_SIZE);
    assert_eq!(args.max_threads, 16);
    let many = parse(&["bucket", "/mnt", "--max-threads", "100000"]).unwrap();
    assert_eq!(
        many.mount_config().threads,
        MAX_DISPATCH_THREADS,
        "accepted, capped"
    );
    assert!(parse(&["bucket", "/mnt", "--max-threads", "0"]).is_err());
    assert_eq!(args.mount_config().read_ahead_kib, 1024);
    let small = parse(&["bucket", "/mnt", "--read-ahead", "12"]).unwrap();
    assert_eq!(small.mount_config().read_ahead_kib, 12);
    for refused in ["0", "3", "65537", "-1", "1M"] {
        assert!(parse(&["bucket", "/mnt", "--read-ahead", refused]).is_err());
    }
    assert_eq!((args.dir_mode, args.file_mode), (0o755, 0o644));
    assert_eq!(args.fs_config().metadata_ttl, MINIMAL_TTL);
    assert!(!args.foreground);
}

#[test]
fn flag_values() {
    let args = parse(&[
        "bkt",
        "/m",
        "--metadata-ttl",
        "indefinite",
        "--dir-mode",
        "0700",
        "--file-mode",
        "600",
        "--uid",
        "7",
        "--prefix",
        "p/",
        "-f",
        "--read-only",
    ])
    .unwrap();
    let fs = args.fs_config();
    assert_eq!(fs.metadata_ttl, Duration::MAX);
    assert_eq!((fs.dir_mode, fs.file_mode, fs.uid), (0o700, 0o600, 7));
    assert_eq!(fs.prefix, "p/");
    assert!(fs.read_only && args.foreground && args.mount_config().read_only);
    assert_eq!(
        parse(&["bkt", "/m", "--metadata-ttl", "5"])
            .unwrap()
            .metadata_ttl,
        Some(Ttl::Seconds(5))
    );
}

#[test]
fn huge_values_neither_panic_nor_wrap() {
    let huge = u64::MAX.to_string();
    assert!(parse(&["bkt", "/m", "--cache", "/c", "--max-cache-size", &huge]).is_err());
    let most = (u64::MAX >> 20).to_string();
    let args = parse(&["bkt", "/m", "--cache", "/c", "--max-cache-size", &most]).unwrap();
    assert!(args.cache_config().unwrap().max_bytes.unwrap() >= u64::MAX >> 1);
    let big_part = parse(&["bkt", "/m", "--part-size", "5368709120"]).unwrap();
    let _ = big_part.fs_config(); // a 5 GiB part size builds a prefetch window
}

#[test]
fn bad_values_are_refused() {
    assert!(parse(&["bkt", "/m", "--metadata-ttl", "soon"]).is_err());
    assert!(parse(&["bkt", "/m", "--dir-mode", "999"]).is_err());
    assert!(parse(&["bkt", "/m", "--part-size", "0"]).is_err());
    assert!(parse(&["bkt", "/m", "--no-such-flag"]).is_err());
    assert!(parse(&["b"]).is_err());
}

#[test]
fn validation_errors_are_one_line() {
    let dir = std::env::temp_dir();
    let d = dir.to_str().unwrap();
    let cases = [
        vec!["s3://bucket/", d, "--prefix", "p/"],
        vec!["bucket", "/no/such/dir/here"],
        vec!["bucket", "/etc/hostname"],
        vec!["bucket", d, "--prefix", "noslash"],
        vec!["bucket", "/proc"],
    ];
    for case in cases {
        let err = parse(&case).unwrap().validate().unwrap_err();
        assert!(!err.is_empty() && !err.contains('\n'), "{case:?}: {err}");
    }
    let mut ok = parse(&["bucket", d]).unwrap();
    ok.validate().unwrap();
    assert!(ok.mount_point.is_absolute());
    let mut relative = parse(&["bucket", d, "--cache", "relcache"]).unwrap();
    relative.validate().unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        relative.cache,
        Some(cwd.join("relcache")),
        "absolute before detaching"
    );
}

/// Tokens a command line is built from: every long flag, values of every shape.
fn token() -> impl proptest::strategy::Strategy<Value = String> {
    use clap::CommandFactory;
    use proptest::prelude::*;
    let flags: Vec<String> = Args::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    prop_oneof![
        proptest::sample::select(flags),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("0".to_string()),
        Just("-f".to_string()),
        Just("--".to_string()),
        Just("indefinite".to_string()),
        "[a-z0-9.:/=_-]{0,12}",
        any::<String>(),
    ]
}

proptest::proptest! {
    #![proptest_config(crate::testing::fuzz_config())]
    #[test]
    fn untrusted_command_lines_never_panic(words in proptest::collection::vec(token(), 0..12)) {
        let argv = std::iter::once("mount-s3".to_string()).chain(words);
        if let Ok(mut args) = Args::try_parse_from(argv) {
            // validate() creates a log directory: not where a random line says.
            args.log_directory = None;
            let _ = args.validate();
            let fs = args.fs_config();
            let _ = crate::fs::read::prefetch::PrefetchConfig::new(fs.read_part_size, fs.memory_limit);
            let _ = (args.cache_config(), args.s3_config(), args.mount_config());
        }
    }
}

#[test]
fn mountinfo_escapes() {
    assert_eq!(unescape_mountinfo(r"/mnt/a\040b"), "/mnt/a b");
    assert_eq!(unescape_mountinfo("/plain"), "/plain");
}

#[test]
fn directory_buckets_are_known_by_flag_or_by_name() {
    let ordered = |argv: &[&str]| parse(argv).unwrap().fs_config().ordered_listings;
    assert!(ordered(&["bkt", "/m"]));
    assert!(!ordered(&["bkt", "/m", "--bucket-type", "directory"]));
    assert!(
        !ordered(&["data--use1-az4--x-s3", "/m"]),
        "Mountpoint's suffix"
    );
    assert!(ordered(&[
        "data--use1-az4--x-s3",
        "/m",
        "--bucket-type",
        "general-purpose"
    ]));
    assert!(parse(&["bkt", "/m", "--bucket-type", "express"]).is_err());
}

#[test]
fn cache_xz_takes_a_bucket_or_an_s3_uri_without_prefix() {
    let dir = std::env::temp_dir();
    let d = dir.to_str().unwrap();
    for (value, bucket) in [
        ("cache--use1-az4--x-s3", "cache--use1-az4--x-s3"),
        ("s3://cache-bucket", "cache-bucket"),
        ("s3://cache-bucket/", "cache-bucket"),
    ] {
        let mut args = parse(&["src-bucket", d, "--cache-xz", value]).unwrap();
        args.validate().unwrap();
        let config = args.shared_cache_config().unwrap();
        assert_eq!(config.bucket, bucket);
        assert_eq!(config.source_bucket, "src-bucket");
        assert_eq!(config.block_size, 1024 * 1024);
        assert_eq!(config.max_object_size, 1024 * 1024, "Mountpoint's limit");
        assert_eq!(config.directory_bucket, bucket.ends_with("--x-s3"));
        assert_eq!(
            args.fs_config().metadata_ttl,
            Duration::from_secs(60),
            "as with --cache"
        );
    }
    let mut args = parse(&[
        "s3://src-bucket/data/",
        d,
        "--cache-xz",
        "xz-cache",
        "--cache-xz-max-object-size",
        "64",
        "--cache-block-size",
        "4096",
    ])
    .unwrap();
    args.validate().unwrap();
    let config = args.shared_cache_config().unwrap();
    assert_eq!(
        config.source_bucket, "src-bucket",
        "the bucket, not its prefix"
    );
    assert_eq!(config.max_object_size, 64 << 20);
    assert_eq!(config.block_size, 4 << 20);
    assert!(
        parse(&["b-b", d, "--cache-xz-max-object-size", "4"]).is_err(),
        "needs --cache-xz"
    );
    assert!(
        parse(&["b-b", d, "--cache-block-size", "64"]).is_err(),
        "needs a cache"
    );
}

#[test]
fn staging_flags_need_a_way_to_stage_and_find_a_directory() {
    let dir = std::env::temp_dir();
    let d = dir.to_str().unwrap();
    assert!(
        parse(&["bkt", d, "--staging-dir", "/x"]).is_err(),
        "needs staging"
    );
    assert!(parse(&["bkt", d, "--max-staging-size", "5"]).is_err());
    let staged = |argv: &[&str]| {
        let args = parse(argv).unwrap();
        (
            args.fs_config().staging,
            args.staging_config().map(|c| c.dir),
        )
    };
    use crate::fs::config::Staging;
    assert_eq!(staged(&["bkt", d]), (Staging::Off, None));
    let (policy, area) = staged(&["bkt", d, "--staged-writes", "--cache", "/c"]);
    assert_eq!(policy, Staging::All);
    assert_eq!(
        area.as_deref(),
        Some(std::path::Path::new("/c")),
        "the cache's directory"
    );
    let (policy, area) = staged(&["bkt", d, "--incremental-upload", "--staging-dir", "/s"]);
    assert_eq!(policy, Staging::Appends);
    assert_eq!(area.as_deref(), Some(std::path::Path::new("/s")));
    let (_, area) = staged(&["bkt", d, "--staged-writes"]);
    assert!(
        area.unwrap().starts_with(std::env::temp_dir()),
        "a directory of one's own in TMPDIR"
    );
}
