//! The shared cache (`--cache-xz`) against SeaweedFS with two buckets, every request counted
//! at the tests' proxy: blocks one mount fetched serve a second mount with no GET of the
//! source; blocks in Mountpoint's format (written here from its documented layout, not with
//! mount-s3's code) are read, and mount-s3's blocks have that layout; an altered block or a
//! replaced object is never served from the cache; a cache bucket that does not answer or
//! denies writes leaves reads working, with one warning.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use common::{Fault, FaultPlan, FaultProxy, Mount, S3Server, pseudo_random_bytes};
use sha2::{Digest, Sha256};

const MIB: usize = 1024 * 1024;

/// Mountpoint's V2 layout, written out from its documentation (independently of
/// `src/shared_cache/format.rs`): SHA-256 keys, seven metadata entries, a CRC32C header
/// checksum over the fields and the data's CRC32C.
mod mountpoint_layout {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn prefix(source_bucket: &str, block_size: u64) -> String {
        let mut input = b"V2".to_vec();
        input.extend_from_slice(&block_size.to_be_bytes());
        input.extend_from_slice(source_bucket.as_bytes());
        hex(&Sha256::digest(&input))
    }

    pub fn block_key(source_bucket: &str, key: &str, etag: &str, index: u64) -> String {
        let object = hex(&Sha256::digest(format!("{key}{etag}").as_bytes()));
        format!("{}/{object}/{index:010}", prefix(source_bucket, 1 << 20))
    }

    pub fn metadata(
        bucket: &str,
        key: &str,
        etag: &str,
        index: u64,
        data: &[u8],
    ) -> BTreeMap<String, String> {
        let offset = index * (1 << 20);
        let mut header = b"V2".to_vec();
        header.extend_from_slice(&index.to_be_bytes());
        header.extend_from_slice(&offset.to_be_bytes());
        header.extend_from_slice(etag.as_bytes());
        header.extend_from_slice(key.as_bytes());
        header.extend_from_slice(bucket.as_bytes());
        header.extend_from_slice(&crc32c::crc32c(data).to_be_bytes());
        [
            ("cache-version", "V2".to_string()),
            ("block-idx", index.to_string()),
            ("block-offset", offset.to_string()),
            ("etag", etag.to_string()),
            (
                "source-key",
                aws_smithy_types::base64::encode(key.as_bytes()),
            ),
            ("source-bucket-name", bucket.to_string()),
            ("header-checksum", crc32c::crc32c(&header).to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    pub fn crc_header(data: &[u8]) -> String {
        aws_smithy_types::base64::encode(crc32c::crc32c(data).to_be_bytes())
    }
}

/// A block as another client writes it: a PUT with metadata and the CRC32C.
fn put_block(
    s3: &S3Server,
    bucket: &str,
    key: &str,
    data: &[u8],
    metadata: &BTreeMap<String, String>,
) {
    let put = s3
        .client()
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(data.to_vec()))
        .set_metadata(Some(metadata.clone().into_iter().collect()))
        .checksum_crc32_c(mountpoint_layout::crc_header(data));
    s3.block_on(put.send()).expect("put a block");
}

/// A block as stored: body, user metadata, and the stored CRC32C.
fn get_block(
    s3: &S3Server,
    bucket: &str,
    key: &str,
) -> (Vec<u8>, BTreeMap<String, String>, Option<String>) {
    let get = s3
        .client()
        .get_object()
        .bucket(bucket)
        .key(key)
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled);
    s3.block_on(async {
        let out = get.send().await.expect("get a block");
        let metadata = out
            .metadata()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let crc = out.checksum_crc32_c().map(str::to_string);
        (
            out.body.collect().await.unwrap().into_bytes().to_vec(),
            metadata,
            crc,
        )
    })
}

fn etag(s3: &S3Server, bucket: &str, key: &str) -> String {
    let head = s3.client().head_object().bucket(bucket).key(key);
    s3.block_on(head.send())
        .unwrap()
        .e_tag()
        .unwrap()
        .to_string()
}

/// Object GETs of `bucket` the proxy saw (listings left out).
fn object_gets(proxy: &FaultProxy, bucket: &str) -> usize {
    proxy
        .recorded()
        .iter()
        .filter(|r| r.line.starts_with(&format!("GET /{bucket}/")) && !r.line.contains("list-type"))
        .count()
}

/// Waits until the cache bucket holds at least `keys` objects.
fn wait_for_keys(s3: &S3Server, bucket: &str, keys: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while s3.list_keys(bucket).len() < keys {
        assert!(
            Instant::now() < deadline,
            "{} objects in the cache bucket, not {keys}",
            s3.list_keys(bucket).len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A mount of `source` through `proxy` sharing blocks through `cache`.
fn mount(s3: &S3Server, source: &str, cache: &str, proxy: &FaultProxy, extra: &[&str]) -> Mount {
    s3.mount_args(source)
        .endpoint(&proxy.url())
        .args(["--cache-xz", cache, "--cache-xz-max-object-size", "8"])
        .args(extra)
        .mount()
}

fn recording_proxy(s3: &S3Server) -> FaultProxy {
    let proxy = FaultProxy::start(s3.endpoint(), FaultPlan::none());
    proxy.record_requests();
    proxy
}

#[test]
fn a_second_mount_reads_the_first_ones_blocks_and_never_the_source() {
    let s3 = S3Server::shared();
    let source = s3.new_bucket("xz-source");
    let cache = s3.new_bucket("xz-cache");
    let mut files: Vec<(String, Vec<u8>)> = (0..20u64)
        .map(|i| {
            (
                format!("small/s{i:03}.bin"),
                pseudo_random_bytes(100 + i, 100 * 1024),
            )
        })
        .collect();
    files.push(("shard.bin".into(), pseudo_random_bytes(7, 3 * MIB + 17)));
    s3.put_many(&source, files.clone(), 8);

    let proxy = recording_proxy(s3);
    let first = mount(s3, &source, &cache, &proxy, &[]);
    for (name, data) in &files {
        assert!(std::fs::read(first.join(name)).unwrap() == *data, "{name}");
    }
    // 20 one-block files, 4 blocks of the shard, and the probe.
    wait_for_keys(s3, &cache, 25);
    assert!(object_gets(&proxy, &source) > 0);
    drop(first);

    // The blocks have Mountpoint's layout, metadata and checksums.
    let (name, data) = &files[3];
    let tag = etag(s3, &source, name);
    let (body, metadata, crc) = get_block(
        s3,
        &cache,
        &mountpoint_layout::block_key(&source, name, &tag, 0),
    );
    assert!(body == *data);
    assert_eq!(
        metadata,
        mountpoint_layout::metadata(&source, name, &tag, 0, data)
    );
    assert_eq!(
        crc.as_deref(),
        Some(mountpoint_layout::crc_header(data).as_str())
    );
    let tag = etag(s3, &source, "shard.bin");
    let shard = &files[20].1;
    let last = &shard[3 * MIB..];
    let (body, metadata, _) = get_block(
        s3,
        &cache,
        &mountpoint_layout::block_key(&source, "shard.bin", &tag, 3),
    );
    assert!(
        body == last,
        "the last block holds the object's last 17 bytes"
    );
    assert_eq!(
        metadata,
        mountpoint_layout::metadata(&source, "shard.bin", &tag, 3, last)
    );
    let (probe, _, _) = get_block(
        s3,
        &cache,
        &format!(
            "{}/_mountpoint_cache_metadata",
            mountpoint_layout::prefix(&source, 1 << 20)
        ),
    );
    assert_eq!(
        String::from_utf8(probe).unwrap(),
        format!("source_bucket={source}\nblock_size=1048576")
    );

    // Another node: every block from the cache bucket.
    let proxy = recording_proxy(s3);
    let second = mount(s3, &source, &cache, &proxy, &[]);
    for (name, data) in &files {
        assert!(std::fs::read(second.join(name)).unwrap() == *data, "{name}");
    }
    assert_eq!(
        object_gets(&proxy, &source),
        0,
        "GETs of the source by the second mount"
    );
    assert!(object_gets(&proxy, &cache) >= 24);
    let log = second.unmount_for_log(Duration::from_secs(20));
    assert!(log.contains("shared cache summary: hits=24 "), "{log}");
}

#[test]
fn blocks_in_mountpoints_format_are_served() {
    let s3 = S3Server::shared();
    let source = s3.new_bucket("xz-mp-source");
    let cache = s3.new_bucket("xz-mp-cache");
    let data = pseudo_random_bytes(31, 200 * 1024);
    s3.put(&source, "données/été.bin", data.clone());
    let tag = etag(s3, &source, "données/été.bin");
    put_block(
        s3,
        &cache,
        &mountpoint_layout::block_key(&source, "données/été.bin", &tag, 0),
        &data,
        &mountpoint_layout::metadata(&source, "données/été.bin", &tag, 0, &data),
    );
    let proxy = recording_proxy(s3);
    let mount = mount(s3, &source, &cache, &proxy, &[]);
    assert!(std::fs::read(mount.join("données/été.bin")).unwrap() == data);
    assert_eq!(
        object_gets(&proxy, &source),
        0,
        "served from the block written outside"
    );
}

#[test]
fn altered_blocks_and_replaced_objects_are_never_served_from_the_cache() {
    let s3 = S3Server::shared();
    let source = s3.new_bucket("xz-alter-source");
    let cache = s3.new_bucket("xz-alter-cache");
    let a = pseudo_random_bytes(41, MIB + 10);
    let b = pseudo_random_bytes(42, 500 * 1024);
    let c1 = pseudo_random_bytes(43, 300 * 1024);
    for (name, data) in [("a.bin", &a), ("b.bin", &b), ("c.bin", &c1)] {
        s3.put(&source, name, data.clone());
    }
    let proxy = recording_proxy(s3);
    let first = mount(s3, &source, &cache, &proxy, &[]);
    for name in ["a.bin", "b.bin", "c.bin"] {
        std::fs::read(first.join(name)).unwrap();
    }
    wait_for_keys(s3, &cache, 5);
    drop(first);

    // a.bin's second block rewritten with other data (and the old metadata); b.bin's block
    // with another ETag in its metadata; c.bin replaced in the source.
    let (tag_a, tag_b) = (etag(s3, &source, "a.bin"), etag(s3, &source, "b.bin"));
    let key_a1 = mountpoint_layout::block_key(&source, "a.bin", &tag_a, 1);
    let (_, meta_a1, _) = get_block(s3, &cache, &key_a1);
    put_block(s3, &cache, &key_a1, b"XXXXXXXXXX", &meta_a1);
    let key_b0 = mountpoint_layout::block_key(&source, "b.bin", &tag_b, 0);
    let (body_b0, mut meta_b0, _) = get_block(s3, &cache, &key_b0);
    meta_b0.insert("etag".into(), "\"another-version\"".into());
    put_block(s3, &cache, &key_b0, &body_b0, &meta_b0);
    let c2 = pseudo_random_bytes(44, 310 * 1024);
    s3.put(&source, "c.bin", c2.clone());

    let proxy = recording_proxy(s3);
    let second = mount(s3, &source, &cache, &proxy, &[]);
    assert!(std::fs::read(second.join("a.bin")).unwrap() == a);
    assert!(std::fs::read(second.join("b.bin")).unwrap() == b);
    assert!(
        std::fs::read(second.join("c.bin")).unwrap() == c2,
        "the new version"
    );
    // One GET each: a.bin's second block, b.bin's block, c.bin's new version.
    assert_eq!(object_gets(&proxy, &source), 3);
    let log = second.unmount_for_log(Duration::from_secs(20));
    assert_eq!(
        log.matches("shared cache block rejected").count(),
        2,
        "{log}"
    );
    assert!(log.contains("hits=1 misses=1 rejects=2 errors=0"), "{log}");
}

/// A cache bucket that never answers, then one that denies writes: reads are right and
/// about as fast as without a cache, and the log has one warning.
#[test]
fn a_failing_cache_bucket_leaves_reads_working_with_one_warning() {
    let s3 = S3Server::shared();
    let source = s3.new_bucket("xz-fail-source");
    let cache = s3.new_bucket("xz-fail-cache");
    let files: Vec<(String, Vec<u8>)> = (0..10u64)
        .map(|i| (format!("f{i}.bin"), pseudo_random_bytes(50 + i, 256 * 1024)))
        .collect();
    s3.put_many(&source, files.clone(), 8);

    for (rule, what) in [
        (format!("/{cache}/"), "unreachable"),
        (format!("PUT /{cache}/"), "denying writes"),
    ] {
        let proxy = recording_proxy(s3);
        let fault = if what == "unreachable" {
            Fault::Stall(60_000)
        } else {
            Fault::Status403
        };
        proxy.rule_matching(&rule, fault);
        let mount = mount(s3, &source, &cache, &proxy, &[]);
        let started = Instant::now();
        for (name, data) in &files {
            assert!(
                std::fs::read(mount.join(name)).unwrap() == *data,
                "{what}: {name}"
            );
        }
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(10),
            "{what}: ten reads took {took:?}"
        );
        assert_eq!(object_gets(&proxy, &source), files.len(), "{what}");
        let log = mount.unmount_for_log(Duration::from_secs(40));
        assert_eq!(
            log.matches("shared cache bucket failed").count(),
            1,
            "{what}: {log}"
        );
    }
    assert_eq!(
        s3.list_keys(&cache).len(),
        0,
        "nothing was written to the cache bucket"
    );
}
