//! The container image, built and run by a real engine (podman): the `prebuilt` stage of
//! packaging/container/Dockerfile on a base image made from Debian's packages
//! (packaging/container/base-image.sh), run as the Kubernetes sidecar runs it: a container
//! with /dev/fuse and CAP_SYS_ADMIN mounts the bucket inside a shared directory whose mount
//! propagates (`rshared`), and a second container reads it from there (`rslave`, the
//! `HostToContainer` of the manifests). Stopping the sidecar unmounts, exit status 0.
//!
//! Skipped without podman, unless `MOUNT_S3_REQUIRE_CONTAINER` is set (CI sets it: there
//! the skip would be a failure).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::common::{S3Server, mount_entry, mount_s3_binary, unique_token};
use super::{repo, run, wait_until};

/// The base image's name in the local store; made once, kept across runs.
const BASE_IMAGE: &str = "localhost/mount-s3-test-base:bookworm";

/// podman, set up for this machine: runc where it is installed (crun refuses hybrid cgroup
/// hierarchies) and container limits no higher than ours (raising them needs
/// CAP_SYS_RESOURCE, which some sandboxes lack).
struct Engine {
    conf: tempfile::TempDir,
}

impl Engine {
    fn find() -> Option<Engine> {
        let works = Command::new("podman")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !works {
            return None;
        }
        let conf = tempfile::tempdir().unwrap();
        let limit = |resource| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes into a live rlimit.
            unsafe { libc::getrlimit(resource, &mut limit) };
            // Far under ours: a sandbox seen here refused even some lower values.
            limit.rlim_cur.min(16384)
        };
        let (files, procs) = (limit(libc::RLIMIT_NOFILE), limit(libc::RLIMIT_NPROC));
        let mut text = format!(
            "[containers]\ndefault_ulimits = [\"nofile={files}:{files}\", \"nproc={procs}:{procs}\"]\n"
        );
        if Command::new("runc")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            text.push_str("[engine]\nruntime = \"runc\"\n");
        }
        fs::write(conf.path().join("containers.conf"), text).unwrap();
        Some(Engine { conf })
    }

    fn podman(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", self.conf.path().join("containers.conf"));
        cmd
    }

    /// Runs podman with `args`; panics with its output unless it succeeds. Returns stdout.
    fn ok(&self, args: &[&str], timeout: Duration) -> String {
        let (status, out, err) = run(self.podman().args(args), timeout);
        assert!(status.success(), "podman {args:?}: {status}\n{out}\n{err}");
        out
    }
}

/// Removes the container, the image and the shared directory's mounts, whatever happened.
struct Cleanup<'a> {
    engine: &'a Engine,
    container: String,
    image: String,
    shared: PathBuf,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = run(self.engine.podman().args(args), Duration::from_secs(60));
        };
        quiet(&["rm", "-f", "-t", "5", &self.container]);
        quiet(&["rmi", "-f", &self.image]);
        let bucket = self.shared.join("bucket");
        for target in [&bucket, &self.shared] {
            while mount_entry(target).is_some() {
                let _ = Command::new("umount").arg("-l").arg(target).status();
            }
        }
    }
}

/// The directory a volume of the pod would be: bind-mounted onto itself and made shared, so
/// that a mount made inside it by one container reaches the host and the other containers.
fn shared_directory(path: &Path) {
    let ok = |args: &[&str]| {
        let status = Command::new("mount").args(args).arg(path).status().unwrap();
        assert!(status.success(), "mount {args:?} {}", path.display());
    };
    ok(&["--bind", path.to_str().unwrap()]);
    ok(&["--make-rshared"]);
}

#[test]
fn container_image_is_built_and_serves_a_sidecar_mount() {
    let Some(engine) = Engine::find() else {
        assert!(
            std::env::var_os("MOUNT_S3_REQUIRE_CONTAINER").is_none(),
            "MOUNT_S3_REQUIRE_CONTAINER is set but podman does not run"
        );
        eprintln!("skipped: podman is not installed (scripts/setup-test-env.sh installs it)");
        return;
    };
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("pkg-image");
    let shard = super::common::pseudo_random_bytes(77, 3 << 20);
    s3.put(&bucket, "train/shard-0.tar", shard.clone());

    // The base image, from Debian's packages (kept for later runs).
    let (status, out, err) = run(
        Command::new("bash")
            .arg(repo("packaging/container/base-image.sh"))
            .arg(BASE_IMAGE)
            .env("ENGINE", "podman")
            .env(
                "CONTAINERS_CONF",
                engine.conf.path().join("containers.conf"),
            ),
        Duration::from_secs(600),
    );
    assert!(status.success(), "base-image.sh: {status}\n{out}\n{err}");

    // The image: the Dockerfile's `prebuilt` stage, from a context of the binary under test
    // and the entrypoint.
    let context = tempfile::tempdir().unwrap();
    fs::copy(mount_s3_binary(), context.path().join("mount-s3")).unwrap();
    let entry_dir = context.path().join("packaging/container");
    fs::create_dir_all(&entry_dir).unwrap();
    fs::copy(
        repo("packaging/container/entrypoint.sh"),
        entry_dir.join("entrypoint.sh"),
    )
    .unwrap();
    let token = unique_token();
    let image = format!("localhost/mount-s3-test:{token}");
    let container = format!("mount-s3-sidecar-{token}");
    let volume = tempfile::tempdir().unwrap();
    let shared = fs::canonicalize(volume.path()).unwrap();
    let _cleanup = Cleanup {
        engine: &engine,
        container: container.clone(),
        image: image.clone(),
        shared: shared.clone(),
    };
    let dockerfile = repo("packaging/container/Dockerfile");
    engine.ok(
        &[
            "build",
            "--network",
            "host",
            "-f",
            dockerfile.to_str().unwrap(),
            "--target",
            "prebuilt",
            "--build-arg",
            &format!("BASE_IMAGE={BASE_IMAGE}"),
            "-t",
            &image,
            context.path().to_str().unwrap(),
        ],
        Duration::from_secs(300),
    );

    // The sidecar, as the manifests run it: /dev/fuse and CAP_SYS_ADMIN, the volume with
    // bidirectional propagation, the mount inside it, credentials in the environment.
    shared_directory(&shared);
    let mount_args = format!(
        "--endpoint-url {} --force-path-style --read-only --allow-other --prefix train/",
        s3.endpoint()
    );
    let env = |k: &str, v: &str| format!("{k}={v}");
    engine.ok(
        &[
            "run",
            "-d",
            "--name",
            &container,
            "--network",
            "host",
            "--device",
            "/dev/fuse",
            "--cap-add",
            "SYS_ADMIN",
            "-v",
            &format!("{}:/data:rshared", shared.display()),
            "-e",
            &env("MOUNT_S3_BUCKET", &bucket),
            "-e",
            "MOUNT_S3_MOUNT_POINT=/data/bucket",
            "-e",
            &env("MOUNT_S3_ARGS", &mount_args),
            "-e",
            &env("AWS_ACCESS_KEY_ID", s3.access_key()),
            "-e",
            &env("AWS_SECRET_ACCESS_KEY", s3.secret_key()),
            "-e",
            &env("AWS_REGION", s3.region()),
            "-e",
            "AWS_EC2_METADATA_DISABLED=true",
            &image,
        ],
        Duration::from_secs(60),
    );
    let logs = || {
        let (_, out, err) = run(
            engine.podman().args(["logs", &container]),
            Duration::from_secs(30),
        );
        format!("{out}{err}")
    };
    let mounted = shared.join("bucket");
    assert!(
        wait_until(Duration::from_secs(60), || mount_entry(&mounted).is_some()),
        "the sidecar's mount did not reach the host at {}; its log:\n{}",
        mounted.display(),
        logs()
    );
    let entry = mount_entry(&mounted).unwrap();
    assert_eq!(entry.fs_type, "fuse.mount-s3", "{entry:?}");

    // The app container sees the mount through its own view of the volume.
    let out = engine.ok(
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &format!("{}:/data:rslave", shared.display()),
            "--entrypoint",
            "sh",
            BASE_IMAGE,
            "-c",
            "ls /data/bucket && cksum < /data/bucket/shard-0.tar",
        ],
        Duration::from_secs(60),
    );
    let cksum_line = {
        let probe = tempfile::NamedTempFile::new().unwrap();
        fs::write(probe.path(), &shard).unwrap();
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!("cksum < {}", probe.path().display()))
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["shard-0.tar", cksum_line.as_str()],
        "the app container's view"
    );

    // Stopping the sidecar (SIGTERM, as the kubelet does) unmounts and exits 0.
    engine.ok(&["stop", "-t", "30", &container], Duration::from_secs(60));
    let code = engine.ok(
        &["inspect", "--format", "{{.State.ExitCode}}", &container],
        Duration::from_secs(30),
    );
    let log = logs();
    assert_eq!(code.trim(), "0", "sidecar exit code; log:\n{log}");
    assert!(log.contains("mount-s3 exited with status 0"), "{log}");
    assert!(
        wait_until(Duration::from_secs(10), || mount_entry(&mounted).is_none()),
        "still mounted at {} after the sidecar stopped",
        mounted.display()
    );
}
