//! Containers: the entrypoint against the test server, and the Kubernetes manifests'
//! structure (parsed with PyYAML).

use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::common::{S3Server, mount_entry, mount_s3_binary, mount_s3_processes_for};
use super::{Dirs, repo, wait_timeout, wait_until, with_server_credentials};

#[test]
fn container_entrypoint_mounts_and_unmounts_on_sigterm() {
    let s3 = S3Server::shared();
    let bucket = s3.new_bucket("pkg-entrypoint");
    s3.put(&bucket, "data/shard-0", b"shard zero".to_vec());
    let dirs = Dirs::new();
    // A directory inside the shared volume, created by the entrypoint.
    let mount_point = dirs.mnt.join("bucket");
    let log = dirs.work.path().join("entrypoint.log");
    let mut cmd = Command::new("bash");
    with_server_credentials(&mut cmd, s3, dirs.work.path())
        .arg(repo("packaging/container/entrypoint.sh"))
        .env("MOUNT_S3_BIN", mount_s3_binary())
        .env("MOUNT_S3_BUCKET", &bucket)
        .env("MOUNT_S3_MOUNT_POINT", &mount_point)
        .env(
            "MOUNT_S3_ARGS",
            format!(
                "--endpoint-url {} --force-path-style --prefix data/",
                s3.endpoint()
            ),
        )
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log).unwrap())
        .stderr(fs::File::create(&log).unwrap());
    let mut child = cmd.spawn().expect("run entrypoint.sh");
    let log_text = || fs::read_to_string(&log).unwrap_or_default();

    let mounted = wait_until(Duration::from_secs(30), || {
        mount_entry(&mount_point).is_some() || matches!(child.try_wait(), Ok(Some(_)))
    });
    if !(mounted && mount_entry(&mount_point).is_some()) {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the entrypoint did not mount {}; log:\n{}",
            mount_point.display(),
            log_text()
        );
    }
    assert_eq!(
        fs::read(mount_point.join("shard-0")).unwrap(),
        b"shard zero"
    );

    // SAFETY: kill(2) on our own child, which has not been reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let status = wait_timeout(&mut child, Duration::from_secs(30));
    let log = log_text();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "entrypoint exit after SIGTERM; log:\n{log}"
    );
    assert!(
        mount_entry(&mount_point).is_none(),
        "still mounted; log:\n{log}"
    );
    assert!(log.contains("SIGTERM received"), "{log}");
    assert!(mount_s3_processes_for(&mount_point).is_empty(), "{log}");
}

// --- Kubernetes manifests ----------------------------------------------------------------------

/// A YAML file's documents flattened by PyYAML to `path=value` (`[0].spec.containers[1].name`),
/// values as plain text. PyYAML: Debian's python3-yaml (scripts/setup-test-env.sh).
fn yaml_paths(rel: &str) -> BTreeMap<String, String> {
    const FLATTEN: &str = r#"
import sys, yaml
def walk(p, v):
    if isinstance(v, dict):
        for k, x in v.items(): walk(p + "." + str(k), x)
        if not v: print(p + "={}")
    elif isinstance(v, list):
        for i, x in enumerate(v): walk(p + "[%d]" % i, x)
        if not v: print(p + "=[]")
    elif isinstance(v, bool): print(p + "=" + ("true" if v else "false"))
    else: print(p + "=" + str(v).replace("\n", "\\n"))
for i, d in enumerate(yaml.safe_load_all(open(sys.argv[1]))): walk("[%d]" % i, d)
"#;
    let python = ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .args(["-c", "import yaml"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .expect("no python3 with PyYAML: run scripts/setup-test-env.sh (python3-yaml)");
    let out = Command::new(python)
        .args(["-c", FLATTEN])
        .arg(repo(rel))
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "{rel} is not valid YAML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Paths `prefix[0]`, `prefix[1]`, ... that have anything under them.
fn items(y: &BTreeMap<String, String>, prefix: &str) -> Vec<String> {
    (0..)
        .map(|i| format!("{prefix}[{i}]"))
        .take_while(|p| y.keys().any(|k| k.starts_with(p.as_str())))
        .collect()
}

fn get<'a>(y: &'a BTreeMap<String, String>, path: &str) -> Option<&'a str> {
    y.get(path).map(String::as_str)
}

/// The `[i]` document of the given kind.
fn doc_of_kind(y: &BTreeMap<String, String>, kind: &str) -> String {
    items(y, "")
        .into_iter()
        .find(|d| get(y, &format!("{d}.kind")) == Some(kind))
        .unwrap_or_else(|| panic!("no {kind} document"))
}

/// The value of the environment variable `var` of `container`.
fn sidecar_env<'a>(y: &'a BTreeMap<String, String>, container: &str, var: &str) -> Option<&'a str> {
    items(y, &format!("{container}.env"))
        .into_iter()
        .find(|e| get(y, &format!("{e}.name")) == Some(var))
        .and_then(|e| get(y, &format!("{e}.value")))
}

/// Checks the sidecar pattern in a Pod manifest; returns the sidecar's path.
fn check_sidecar_pod(rel: &str) -> (BTreeMap<String, String>, String) {
    let y = yaml_paths(rel);
    let pod = doc_of_kind(&y, "Pod");
    let all: Vec<String> = [".spec.initContainers", ".spec.containers"]
        .iter()
        .flat_map(|c| items(&y, &format!("{pod}{c}")))
        .collect();
    let name = |c: &String| get(&y, &format!("{c}.name")).unwrap_or("");
    let sidecar = all
        .iter()
        .find(|c| name(c) == "mount-s3")
        .expect("a mount-s3 container");
    let apps: Vec<&String> = all.iter().filter(|c| name(c) != "mount-s3").collect();
    assert!(!apps.is_empty(), "{rel}: no application container");
    assert_eq!(
        get(&y, &format!("{sidecar}.securityContext.privileged")),
        Some("true"),
        "{rel}"
    );

    // The shared volume: Bidirectional in the sidecar, HostToContainer in every app.
    let mounts = items(&y, &format!("{sidecar}.volumeMounts"));
    let shared = mounts
        .iter()
        .find(|m| get(&y, &format!("{m}.mountPropagation")) == Some("Bidirectional"))
        .unwrap_or_else(|| panic!("{rel}: no Bidirectional volume mount in the sidecar"));
    let volume = get(&y, &format!("{shared}.name")).unwrap();
    let path = get(&y, &format!("{shared}.mountPath")).unwrap();
    let volume_decl = items(&y, &format!("{pod}.spec.volumes"))
        .into_iter()
        .find(|v| get(&y, &format!("{v}.name")) == Some(volume))
        .unwrap_or_else(|| panic!("{rel}: volume {volume} is not declared"));
    assert_eq!(
        get(&y, &format!("{volume_decl}.emptyDir")),
        Some("{}"),
        "{rel}"
    );
    for app in apps {
        let seen = items(&y, &format!("{app}.volumeMounts"))
            .into_iter()
            .any(|m| {
                get(&y, &format!("{m}.name")) == Some(volume)
                    && get(&y, &format!("{m}.mountPropagation")) == Some("HostToContainer")
            });
        assert!(
            seen,
            "{rel}: {app} does not mount {volume} with HostToContainer"
        );
    }

    // The entrypoint's variables: the mount point lies inside the shared volume.
    let env = |var: &str| {
        sidecar_env(&y, sidecar, var).unwrap_or_else(|| panic!("{rel}: sidecar env {var} missing"))
    };
    assert!(!env("MOUNT_S3_BUCKET").is_empty());
    let mount_point = env("MOUNT_S3_MOUNT_POINT");
    assert!(
        mount_point.starts_with(&format!("{path}/")),
        "{rel}: {mount_point} must be a directory inside the shared volume at {path}"
    );
    (y, sidecar.clone())
}

#[test]
fn kubernetes_sidecar_with_secret() {
    let (y, sidecar) = check_sidecar_pod("packaging/kubernetes/sidecar-pod.yaml");
    let secret_ref = format!("{sidecar}.envFrom[0].secretRef.name");
    let secret_name = get(&y, &secret_ref).expect("credentials from a Secret (envFrom)");
    let s = yaml_paths("packaging/kubernetes/secret.example.yaml");
    let secret = doc_of_kind(&s, "Secret");
    assert_eq!(
        get(&s, &format!("{secret}.metadata.name")),
        Some(secret_name)
    );
    for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        assert!(
            get(&s, &format!("{secret}.stringData.{key}")).is_some(),
            "{key}"
        );
    }
    // --cache is a volume of its own, and --max-cache-size keeps under its sizeLimit (the
    // kubelet evicts a pod whose emptyDir outgrows it).
    let pod = doc_of_kind(&y, "Pod");
    let args = sidecar_env(&y, &sidecar, "MOUNT_S3_ARGS").expect("MOUNT_S3_ARGS");
    let words: Vec<&str> = args.split_whitespace().collect();
    let value_of = |flag: &str| {
        words
            .windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1])
            .unwrap_or_else(|| panic!("MOUNT_S3_ARGS has no {flag}: {args}"))
    };
    let cache_mount = items(&y, &format!("{sidecar}.volumeMounts"))
        .into_iter()
        .find(|m| get(&y, &format!("{m}.mountPath")) == Some(value_of("--cache")))
        .expect("the --cache directory is a volume mount of the sidecar");
    let cache_volume = get(&y, &format!("{cache_mount}.name")).unwrap();
    let volume = items(&y, &format!("{pod}.spec.volumes"))
        .into_iter()
        .find(|v| get(&y, &format!("{v}.name")) == Some(cache_volume))
        .expect("the cache volume is declared");
    let limit = get(&y, &format!("{volume}.emptyDir.sizeLimit")).expect("cache sizeLimit");
    let limit_mib: u64 = limit
        .strip_suffix("Gi")
        .expect("sizeLimit in Gi")
        .parse::<u64>()
        .unwrap()
        * 1024;
    let max_mib: u64 = value_of("--max-cache-size").parse().unwrap();
    assert!(
        max_mib < limit_mib,
        "--max-cache-size {max_mib} MiB must stay under {limit}"
    );
}

#[test]
fn kubernetes_sidecar_with_irsa() {
    let (y, _) = check_sidecar_pod("packaging/kubernetes/sidecar-pod-irsa.yaml");
    let sa = doc_of_kind(&y, "ServiceAccount");
    let pod = doc_of_kind(&y, "Pod");
    let sa_name = get(&y, &format!("{sa}.metadata.name")).unwrap();
    assert_eq!(
        get(&y, &format!("{pod}.spec.serviceAccountName")),
        Some(sa_name)
    );
    let role = get(
        &y,
        &format!("{sa}.metadata.annotations.eks.amazonaws.com/role-arn"),
    );
    assert!(
        role.is_some_and(|r| r.starts_with("arn:aws:iam::")),
        "{role:?}"
    );
}

#[test]
fn kubernetes_fuse_device_without_privilege() {
    let y = yaml_paths("packaging/kubernetes/fuse-device-pod.yaml");
    let pod = doc_of_kind(&y, "Pod");
    let c = format!("{pod}.spec.containers[0]");
    assert_eq!(
        get(&y, &format!("{c}.securityContext.capabilities.add[0]")),
        Some("SYS_ADMIN")
    );
    assert_eq!(get(&y, &format!("{c}.securityContext.privileged")), None);
    assert_eq!(
        get(&y, &format!("{pod}.spec.volumes[0].hostPath.path")),
        Some("/dev/fuse")
    );
    assert!(
        !y.values().any(|v| v == "Bidirectional"),
        "needs privileged"
    );
}
