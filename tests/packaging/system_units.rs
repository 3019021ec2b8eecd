//! The systemd unit and the Debian package.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{RUN_TIMEOUT, read, repo, run};

/// `Key=value` lines of one `[Section]` of a unit file.
fn unit_section(unit: &str, section: &str) -> Vec<(String, String)> {
    let header = format!("[{section}]");
    unit.lines()
        .skip_while(|l| l.trim() != header)
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn systemd_unit_mounts_after_network_and_unmounts_on_stop() {
    let unit = read("packaging/systemd/mount-s3@.service");
    let has = |section: &str, key: &str, value: &str| {
        unit_section(&unit, section)
            .iter()
            .any(|(k, v)| k == key && v.contains(value))
    };
    assert!(has("Unit", "After", "network-online.target"));
    assert!(has("Unit", "Wants", "network-online.target"));
    assert!(has("Service", "Type", "forking"));
    assert!(has("Service", "EnvironmentFile", "/etc/mount-s3/%i.env"));
    assert!(has(
        "Service",
        "ExecStart",
        "/usr/bin/mount-s3 $MOUNT_S3_ARGS"
    ));
    assert!(has(
        "Service",
        "ExecStop",
        "fusermount3 -u ${MOUNT_S3_MOUNT_POINT}"
    ));
    assert!(has("Service", "Restart", "on-failure"));
    assert!(has("Install", "WantedBy", ".target"));
    let env = read("packaging/systemd/example.env");
    for var in [
        "MOUNT_S3_BUCKET=",
        "MOUNT_S3_MOUNT_POINT=",
        "MOUNT_S3_ARGS=",
    ] {
        assert!(
            env.lines().any(|l| l.starts_with(var)),
            "example.env lacks {var}"
        );
    }
    // Type=forking relies on mount-s3 detaching: no --foreground anywhere.
    let args = env
        .lines()
        .find(|l| l.starts_with("MOUNT_S3_ARGS="))
        .unwrap();
    let foreground = |s: &str| {
        s.split_whitespace()
            .any(|w| w == "-f" || w == "--foreground")
    };
    let exec_start = unit_section(&unit, "Service");
    let exec_start = exec_start.iter().find(|(k, _)| k == "ExecStart").unwrap();
    assert!(!foreground(args) && !foreground(&exec_start.1));
}

// --- Debian package ---------------------------------------------------------------------------

/// The `assets` sources of `[package.metadata.deb]` in Cargo.toml.
fn deb_asset_sources() -> Vec<String> {
    let manifest = read("Cargo.toml");
    let section = manifest
        .split("[package.metadata.deb]")
        .nth(1)
        .expect("Cargo.toml has [package.metadata.deb]");
    let assets = section.split("assets = [").nth(1).expect("deb assets");
    let assets = &assets[..assets.find("\n]").expect("end of assets")];
    assets
        .lines()
        .filter_map(|l| l.trim().strip_prefix("[\""))
        .filter_map(|l| l.split('"').next())
        .map(str::to_string)
        .collect()
}

#[test]
fn deb_assets_exist() {
    let sources = deb_asset_sources();
    assert!(sources.iter().any(|s| s == "man/mount-s3.8"), "{sources:?}");
    for source in sources.iter().filter(|s| !s.starts_with("target/")) {
        assert!(repo(source).is_file(), "deb asset {source} does not exist");
    }
    assert!(
        read("Cargo.toml")
            .contains(r#"dest = "sbin/mount.mount-s3", link_name = "/usr/bin/mount-s3""#)
    );
}

/// Builds the .deb with packaging/deb/build.sh and checks what `dpkg -x` unpacks. Opt-in:
/// `MOUNT_S3_TEST_DEB=1` builds it from a release build as shipped (minutes: cargo-deb is
/// installed if missing, then a release build); `MOUNT_S3_TEST_DEB=debug` packages the debug
/// binary the tests already built (seconds, once cargo-deb is installed).
#[test]
fn deb_package_installs_binary_helper_and_man_page() {
    let mode = std::env::var("MOUNT_S3_TEST_DEB").unwrap_or_default();
    let args: &[&str] = match mode.as_str() {
        "" | "0" => {
            eprintln!("not building the .deb: set MOUNT_S3_TEST_DEB=1 (release) or =debug");
            return;
        }
        "debug" => &["--profile", "dev", "--no-build", "--fast"],
        _ => &[],
    };
    let (status, stdout, stderr) = run(
        Command::new(repo("packaging/deb/build.sh")).args(args),
        Duration::from_secs(40 * 60),
    );
    assert!(status.success(), "build.sh failed ({status}):\n{stderr}");
    let deb = PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("build.sh prints the .deb")
            .trim(),
    );
    let root = tempfile::tempdir().unwrap();
    let (status, _, err) = run(
        Command::new("dpkg").arg("-x").arg(&deb).arg(root.path()),
        RUN_TIMEOUT,
    );
    assert!(status.success(), "dpkg -x: {err}");

    let binary = root.path().join("usr/bin/mount-s3");
    let (status, out, err) = run(Command::new(&binary).arg("--version"), RUN_TIMEOUT);
    assert!(status.success(), "{}: {err}", binary.display());
    assert!(out.contains(env!("CARGO_PKG_VERSION")), "{out}");
    let helper = root.path().join("sbin/mount.mount-s3");
    assert_eq!(
        fs::read_link(&helper).unwrap(),
        Path::new("/usr/bin/mount-s3")
    );
    let man = root.path().join("usr/share/man/man8/mount-s3.8.gz");
    let (status, text, err) = run(Command::new("gzip").arg("-dc").arg(&man), RUN_TIMEOUT);
    assert!(status.success(), "gunzip {}: {err}", man.display());
    assert_eq!(text, read("man/mount-s3.8"));
    assert!(
        root.path()
            .join("usr/lib/systemd/system/mount-s3@.service")
            .is_file()
    );
    assert!(
        root.path()
            .join("usr/share/doc/mount-s3/copyright")
            .is_file()
    );
    let (_, depends, _) = run(
        Command::new("dpkg-deb")
            .args(["-f"])
            .arg(&deb)
            .arg("Depends"),
        RUN_TIMEOUT,
    );
    assert!(depends.contains("fuse3"), "Depends: {depends}");
}
