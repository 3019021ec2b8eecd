//! Mountpoint 1.23's command line, flag by flag, held against ours: every flag parses with
//! Mountpoint's value forms, has Mountpoint's default where it has one, and is named in
//! `--help`, the man page and README's flag table. A flag Mountpoint adds is one line here.

use clap::{CommandFactory, Parser};

use super::Args;

/// One flag of Mountpoint's: its long name, a value of Mountpoint's form (`None` for a
/// switch), its default as Mountpoint prints it (`None` if it has none), and the flags it
/// needs beside it.
struct MountpointFlag {
    name: &'static str,
    value: Option<&'static str>,
    default: Option<&'static str>,
    needs: &'static [&'static str],
}

const fn flag(
    name: &'static str,
    value: Option<&'static str>,
    default: Option<&'static str>,
    needs: &'static [&'static str],
) -> MountpointFlag {
    MountpointFlag {
        name,
        value,
        default,
        needs,
    }
}

const CACHE: &[&str] = &["--cache", "/tmp/c"];

/// Mountpoint 1.23.0's `mount-s3 --help`, options only (the two positional arguments are
/// checked by the tests of `values`). `--cache-block-size` is built into Mountpoint only with
/// a feature; it is listed because Mountpoint's documentation gives its unit (KiB).
const MOUNTPOINT_1_23: &[MountpointFlag] = &[
    flag("prefix", Some("a/b/"), None, &[]),
    flag("region", Some("eu-west-1"), None, &[]),
    flag("endpoint-url", Some("http://127.0.0.1:9000"), None, &[]),
    flag("force-path-style", None, None, &[]),
    flag("transfer-acceleration", None, None, &[]),
    flag("dual-stack", None, None, &[]),
    flag("requester-pays", None, None, &[]),
    flag("bucket-type", Some("general-purpose"), None, &[]),
    flag("no-sign-request", None, None, &[]),
    flag("profile", Some("prod"), None, &[]),
    flag("read-only", None, None, &[]),
    flag("storage-class", Some("INTELLIGENT_TIERING"), None, &[]),
    flag("allow-delete", None, None, &[]),
    flag("allow-overwrite", None, None, &[]),
    flag("incremental-upload", None, None, &[]),
    flag("auto-unmount", None, None, &["--allow-other"]),
    flag("allow-root", None, None, &[]),
    flag("allow-other", None, None, &[]),
    flag("maximum-throughput-gbps", Some("100"), None, &[]),
    flag("max-threads", Some("64"), Some("16"), &[]),
    flag("part-size", Some("16777216"), Some("8388608"), &[]),
    flag("read-part-size", Some("1048576"), None, &[]),
    flag("write-part-size", Some("16777216"), None, &[]),
    flag(
        "ca-bundle",
        Some("/etc/ssl/certs/ca-certificates.crt"),
        None,
        &[],
    ),
    flag("uid", Some("1000"), None, &[]),
    flag("gid", Some("1000"), None, &[]),
    flag("dir-mode", Some("0750"), Some("0755"), &[]),
    flag("file-mode", Some("0640"), Some("0644"), &[]),
    flag("foreground", None, None, &[]),
    flag("expected-bucket-owner", Some("111122223333"), None, &[]),
    flag("log-directory", Some("/var/log/mount-s3"), None, &[]),
    flag("log-metrics", None, None, &[]),
    flag("otlp-endpoint", Some("http://127.0.0.1:4318"), None, &[]),
    flag(
        "otlp-export-interval",
        Some("30"),
        None,
        &["--otlp-endpoint", "http://x"],
    ),
    flag("debug", None, None, &[]),
    flag("debug-crt", None, None, &[]),
    flag("no-log", None, None, &[]),
    flag("cache", Some("/tmp/c"), None, &[]),
    flag("metadata-ttl", Some("indefinite"), None, &[]),
    flag("negative-metadata-ttl", Some("minimal"), None, &[]),
    flag("max-cache-size", Some("1024"), None, CACHE),
    flag("cache-block-size", Some("4096"), Some("1024"), CACHE),
    flag("cache-xz", Some("cache--use1-az4--x-s3"), None, &[]),
    flag("user-agent-prefix", Some("my-job/1"), None, &[]),
    flag("sse", Some("aws:kms"), None, &[]),
    flag(
        "sse-kms-key-id",
        Some("arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
        None,
        &["--sse", "aws:kms"],
    ),
    // Mountpoint's default (crc32c, off for Outposts) is decided after parsing, as ours.
    flag("upload-checksums", Some("off"), None, &[]),
    flag("infer-content-type", None, None, &[]),
    flag("bind", Some("eth0"), None, &[]),
];

/// Mountpoint's short flags and the long flag each stands for.
const SHORT: &[(char, &str)] = &[('f', "foreground"), ('d', "debug"), ('l', "log-directory")];

fn try_parse(words: &[&str]) -> Result<Args, clap::Error> {
    Args::try_parse_from(["mount-s3", "bucket", "/mnt"].iter().chain(words))
}

#[test]
fn every_mountpoint_flag_parses_with_its_value_forms() {
    for f in MOUNTPOINT_1_23 {
        let long = format!("--{}", f.name);
        let mut words: Vec<&str> = f.needs.to_vec();
        words.push(&long);
        words.extend(f.value);
        if let Err(e) = try_parse(&words) {
            panic!("{words:?} is refused: {}", e.render());
        }
        if let Some(value) = f.value {
            let equals = format!("{long}={value}");
            let mut words: Vec<&str> = f.needs.to_vec();
            words.push(&equals);
            assert!(try_parse(&words).is_ok(), "{equals}");
        }
    }
    for (short, long) in SHORT {
        let mut words = vec![format!("-{short}")];
        if *long == "log-directory" {
            words.push("/var/log/x".into());
        }
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        assert!(try_parse(&words).is_ok(), "-{short} for --{long}");
    }
}

#[test]
fn defaults_are_mountpoints() {
    let command = Args::command();
    for f in MOUNTPOINT_1_23 {
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(f.name))
            .unwrap_or_else(|| panic!("--{} is missing", f.name));
        let ours: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let theirs: Vec<String> = f.default.iter().map(|d| d.to_string()).collect();
        assert_eq!(ours, theirs, "default of --{}", f.name);
    }
}

#[test]
fn every_mountpoint_flag_is_in_the_help_the_man_page_and_the_readme() {
    let help = Args::command().render_long_help().to_string();
    let root = env!("CARGO_MANIFEST_DIR");
    let man = std::fs::read_to_string(format!("{root}/man/mount-s3.8")).unwrap();
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let mut missing = Vec::new();
    for f in MOUNTPOINT_1_23 {
        let long = format!("--{}", f.name);
        let roff = long.replace('-', "\\-");
        for (place, text, wanted) in [
            ("--help", &help, &long),
            ("man page", &man, &roff),
            ("README", &readme, &format!("`{long}")),
        ] {
            if !text.contains(wanted.as_str()) {
                missing.push(format!("{long} in the {place}"));
            }
        }
    }
    assert!(missing.is_empty(), "not documented: {missing:?}");
}
