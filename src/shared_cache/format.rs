//! Mountpoint's on-bucket format for a shared cache (`--cache-xz`, its schema `V2`), byte for
//! byte, so a Mountpoint node and a mount-s3 node share one cache bucket:
//!
//! - every key starts with a prefix, the lowercase hex SHA-256 of `"V2"`, the block size as
//!   8 big-endian bytes and the source bucket's name;
//! - a block's key is `PREFIX/OBJECT/INDEX`: OBJECT is the hex SHA-256 of the object's full
//!   key followed by its ETag (quotes kept), INDEX the block index padded to 10 digits;
//! - each block carries seven user metadata entries (version, index, offset, ETag, the key
//!   in base64, the source bucket, and a header checksum): the CRC32C of `"V2"`, index and
//!   offset (8 bytes each, big-endian), ETag, key, bucket and the CRC32C of the block's data
//!   (4 bytes), written in decimal; the data's CRC32C also goes as the PUT's checksum;
//! - `PREFIX/_mountpoint_cache_metadata` holds `source_bucket=B\nblock_size=N`, written at
//!   mount as a probe of write access.
//!
//! Reading is stricter than Mountpoint's: the data's CRC32C is computed from the body (not
//! taken from the server), so the header checksum checks the data too, and the length must
//! be the block's; anything that does not check is a miss, never served.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::s3::{TaggedObject, TaggedPut};

/// The schema version: the first input of every hash here, and a metadata value.
pub const VERSION: &str = "V2";

/// The probe object's name under the prefix.
pub const PROBE_NAME: &str = "_mountpoint_cache_metadata";

/// The storage class a directory bucket's probe is written with (a general-purpose bucket
/// refuses it, which is how Mountpoint checks the bucket's kind).
pub const EXPRESS_STORAGE_CLASS: &str = "EXPRESS_ONEZONE";

/// Metadata names, as Mountpoint writes them.
const CACHE_VERSION: &str = "cache-version";
const BLOCK_IDX: &str = "block-idx";
const BLOCK_OFFSET: &str = "block-offset";
const ETAG: &str = "etag";
const SOURCE_KEY: &str = "source-key";
const SOURCE_BUCKET: &str = "source-bucket-name";
const HEADER_CHECKSUM: &str = "header-checksum";

/// Why a block read back from the cache bucket is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    /// A metadata entry is missing or holds another value (its name).
    Header(&'static str),
    /// The body is not as long as the block must be.
    Length { got: usize, want: usize },
    /// The server's CRC32C of the body disagrees with the body.
    DataChecksum,
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reject::Header(name) => write!(f, "metadata {name} does not match"),
            Reject::Length { got, want } => write!(f, "{got} bytes where the block has {want}"),
            Reject::DataChecksum => write!(f, "the stored CRC32C does not match the data"),
        }
    }
}

/// Where the blocks of one source bucket, cut at one block size, live in a cache bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The mounted bucket's name (or ARN), without the mount's prefix.
    source_bucket: String,
    /// Bytes per block.
    block_size: u64,
    /// The hex prefix of every key.
    prefix: String,
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The header checksum of a block: CRC32C over the fields in Mountpoint's order.
fn header_checksum(index: u64, offset: u64, etag: &str, key: &str, bucket: &str, data: u32) -> u32 {
    let mut crc = crc32c::crc32c(VERSION.as_bytes());
    for piece in [
        &index.to_be_bytes()[..],
        &offset.to_be_bytes()[..],
        etag.as_bytes(),
        key.as_bytes(),
        bucket.as_bytes(),
        &data.to_be_bytes()[..],
    ] {
        crc = crc32c::crc32c_append(crc, piece);
    }
    crc
}

/// The CRC32C as S3's `x-amz-checksum-crc32c` carries it: base64 of four big-endian bytes.
pub fn crc32c_header(crc: u32) -> String {
    aws_smithy_types::base64::encode(crc.to_be_bytes())
}

impl Layout {
    /// The layout for `source_bucket` at `block_size` bytes per block.
    pub fn new(source_bucket: &str, block_size: u64) -> Self {
        let mut hash = Sha256::new();
        hash.update(VERSION.as_bytes());
        hash.update(block_size.to_be_bytes());
        hash.update(source_bucket.as_bytes());
        Self {
            source_bucket: source_bucket.to_string(),
            block_size,
            prefix: hex(&hash.finalize()),
        }
    }

    /// Bytes per block.
    pub fn block_size(&self) -> u64 {
        self.block_size
    }

    /// The key of block `index` of the object `key` at version `etag`.
    pub fn block_key(&self, key: &str, etag: &str, index: u64) -> String {
        let mut hash = Sha256::new();
        hash.update(key.as_bytes());
        hash.update(etag.as_bytes());
        format!("{}/{}/{index:010}", self.prefix, hex(&hash.finalize()))
    }

    /// The probe object: its key and body.
    pub fn probe(&self) -> (String, String) {
        (
            format!("{}/{PROBE_NAME}", self.prefix),
            format!(
                "source_bucket={}\nblock_size={}",
                self.source_bucket, self.block_size
            ),
        )
    }

    /// How block `index` of `key` at `etag`, holding `data`, is written.
    pub fn block_put(&self, key: &str, etag: &str, index: u64, data: &[u8]) -> TaggedPut {
        let offset = index.saturating_mul(self.block_size);
        let crc = crc32c::crc32c(data);
        let header = header_checksum(index, offset, etag, key, &self.source_bucket, crc);
        let entry = |name: &str, value: String| (name.to_string(), value);
        TaggedPut {
            metadata: vec![
                entry(CACHE_VERSION, VERSION.to_string()),
                entry(BLOCK_IDX, index.to_string()),
                entry(BLOCK_OFFSET, offset.to_string()),
                entry(ETAG, etag.to_string()),
                entry(SOURCE_KEY, aws_smithy_types::base64::encode(key.as_bytes())),
                entry(SOURCE_BUCKET, self.source_bucket.clone()),
                entry(HEADER_CHECKSUM, header.to_string()),
            ],
            crc32c: Some(crc32c_header(crc)),
            storage_class: None,
        }
    }

    /// The block's length for an object of `size` bytes (the last one is shorter).
    pub fn block_len(&self, size: u64, index: u64) -> u64 {
        let start = index.saturating_mul(self.block_size);
        size.saturating_sub(start).min(self.block_size)
    }

    /// Checks a block read back as block `index` of `key` at `etag` (of an object of `size`
    /// bytes): every metadata field as Mountpoint checks them, in its order, with the header
    /// checksum computed over the body's own CRC32C, and the length.
    pub fn verify(
        &self,
        key: &str,
        etag: &str,
        size: u64,
        index: u64,
        block: &TaggedObject,
    ) -> Result<(), Reject> {
        let want = self.block_len(size, index) as usize;
        if block.data.len() != want {
            return Err(Reject::Length {
                got: block.data.len(),
                want,
            });
        }
        let crc = crc32c::crc32c(&block.data);
        if let Some(stored) = &block.crc32c
            && *stored != crc32c_header(crc)
        {
            return Err(Reject::DataChecksum);
        }
        let offset = index.saturating_mul(self.block_size);
        let field = |name: &'static str| block.metadata.get(name).ok_or(Reject::Header(name));
        let equal = |name: &'static str, want: &str| match field(name)? == want {
            true => Ok(()),
            false => Err(Reject::Header(name)),
        };
        let number = |name: &'static str, want: u64| match field(name)?.parse::<u64>() {
            Ok(n) if n == want => Ok(()),
            _ => Err(Reject::Header(name)),
        };
        equal(CACHE_VERSION, VERSION)?;
        number(BLOCK_IDX, index)?;
        number(BLOCK_OFFSET, offset)?;
        equal(ETAG, etag)?;
        equal(
            SOURCE_KEY,
            &aws_smithy_types::base64::encode(key.as_bytes()),
        )?;
        equal(SOURCE_BUCKET, &self.source_bucket)?;
        let header = header_checksum(index, offset, etag, key, &self.source_bucket, crc);
        number(HEADER_CHECKSUM, u64::from(header))
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// Worked example A of the format notes (computed outside this code, with Python's
    /// hashlib and a reference CRC32C).
    const PREFIX_A: &str = "ba5acfdde59dbc7b6ba92bc326ea19bccdba0b12b6fe8ca71001a81dd90a706a";
    const ETAG_A: &str = "\"5eb63bbbe01eeed093cb22bb8f5acdc3\"";

    fn written(
        layout: &Layout,
        key: &str,
        etag: &str,
        index: u64,
        data: &'static [u8],
    ) -> TaggedObject {
        let put = layout.block_put(key, etag, index, data);
        TaggedObject {
            data: Bytes::from_static(data),
            metadata: put.metadata.into_iter().collect(),
            crc32c: put.crc32c,
        }
    }

    #[test]
    fn keys_and_metadata_match_mountpoints_worked_examples() {
        let layout = Layout::new("amzn-s3-demo-bucket", 1024 * 1024);
        assert_eq!(
            layout.block_key("photos/cat.txt", ETAG_A, 0),
            format!(
                "{PREFIX_A}/977fe5f4760c5776204b05d616f72ac18448d7373f022bbf8713a61ca720d60a/0000000000"
            )
        );
        let put = layout.block_put("photos/cat.txt", ETAG_A, 0, b"hello world");
        assert_eq!(put.crc32c.as_deref(), Some("yZRlqg=="));
        let meta: std::collections::BTreeMap<_, _> = put.metadata.into_iter().collect();
        assert_eq!(meta["cache-version"], "V2");
        assert_eq!(meta["block-idx"], "0");
        assert_eq!(meta["block-offset"], "0");
        assert_eq!(meta["etag"], ETAG_A);
        assert_eq!(meta["source-key"], "cGhvdG9zL2NhdC50eHQ=");
        assert_eq!(meta["source-bucket-name"], "amzn-s3-demo-bucket");
        assert_eq!(meta["header-checksum"], "1818405049");
        assert_eq!(meta.len(), 7);
        let (probe_key, body) = layout.probe();
        assert_eq!(probe_key, format!("{PREFIX_A}/_mountpoint_cache_metadata"));
        assert_eq!(
            body,
            "source_bucket=amzn-s3-demo-bucket\nblock_size=1048576"
        );

        // Example B: a key outside ASCII.
        let key_b = "données/été.txt";
        assert_eq!(
            layout.block_key(key_b, ETAG_A, 0),
            format!(
                "{PREFIX_A}/a4ab2b0119be51c1d3d0142401856a250455c2ebde2a31692da5d5843b54ac87/0000000000"
            )
        );
        let meta: std::collections::BTreeMap<_, _> = layout
            .block_put(key_b, ETAG_A, 0, b"hello world")
            .metadata
            .into_iter()
            .collect();
        assert_eq!(meta["source-key"], "ZG9ubsOpZXMvw6l0w6kudHh0");
        assert_eq!(meta["header-checksum"], "3914422955");

        // Example C: 64 KiB blocks, block 1.
        let small = Layout::new("amzn-s3-demo-bucket", 65536);
        assert_eq!(
            small.block_key("photos/cat.txt", ETAG_A, 1),
            "f204b69937ecdda878672d4b0c1f7d270b787b973ca9815ac035b92d744f4f87/977fe5f4760c5776204b05d616f72ac18448d7373f022bbf8713a61ca720d60a/0000000001"
        );
        let meta: std::collections::BTreeMap<_, _> = small
            .block_put("photos/cat.txt", ETAG_A, 1, b"hello world")
            .metadata
            .into_iter()
            .collect();
        assert_eq!(meta["block-offset"], "65536");
        assert_eq!(meta["header-checksum"], "2596251634");
    }

    #[test]
    fn a_written_block_verifies_and_every_change_is_rejected() {
        let layout = Layout::new("src", 16);
        let data: &'static [u8] = b"0123456789abcdef";
        let good = written(&layout, "k", "\"e1\"", 2, data);
        // An object of 40 bytes: block 2 holds bytes 32..40, 8 bytes; of 48, 16 bytes.
        assert_eq!(layout.verify("k", "\"e1\"", 48, 2, &good), Ok(()));
        assert_eq!(
            layout.verify("k", "\"e1\"", 40, 2, &good),
            Err(Reject::Length { got: 16, want: 8 })
        );
        // Another version, key, index or bucket: a different header.
        assert_eq!(
            layout.verify("k", "\"e2\"", 48, 2, &good),
            Err(Reject::Header("etag"))
        );
        assert_eq!(
            layout.verify("j", "\"e1\"", 48, 2, &good),
            Err(Reject::Header("source-key"))
        );
        assert_eq!(
            layout.verify("k", "\"e1\"", 64, 3, &good),
            Err(Reject::Header("block-idx"))
        );
        let other = Layout::new("other", 16);
        assert_eq!(
            other.verify("k", "\"e1\"", 48, 2, &good),
            Err(Reject::Header("source-bucket-name"))
        );
        // Data altered, with a checksum the server computed for it (a block rewritten by
        // someone with the old metadata): the header checksum catches it.
        let mut altered = good.clone();
        altered.data = Bytes::from_static(b"0123456789abcdeX");
        altered.crc32c = Some(crc32c_header(crc32c::crc32c(&altered.data)));
        assert_eq!(
            layout.verify("k", "\"e1\"", 48, 2, &altered),
            Err(Reject::Header("header-checksum"))
        );
        // Data altered in flight (the stored checksum is the old one).
        altered.crc32c = good.crc32c.clone();
        assert_eq!(
            layout.verify("k", "\"e1\"", 48, 2, &altered),
            Err(Reject::DataChecksum)
        );
        // No checksum from the server: the header checksum still checks the data.
        let mut unsummed = good.clone();
        unsummed.crc32c = None;
        assert_eq!(layout.verify("k", "\"e1\"", 48, 2, &unsummed), Ok(()));
        // Each metadata field removed or changed.
        for name in [
            "cache-version",
            "block-idx",
            "block-offset",
            "etag",
            "source-key",
            "source-bucket-name",
            "header-checksum",
        ] {
            let mut missing = good.clone();
            missing.metadata.remove(name);
            assert!(
                layout.verify("k", "\"e1\"", 48, 2, &missing).is_err(),
                "{name}"
            );
            let mut changed = good.clone();
            changed.metadata.insert(name.to_string(), "1".to_string());
            assert!(
                layout.verify("k", "\"e1\"", 48, 2, &changed).is_err(),
                "{name}"
            );
        }
        // Extra entries are ignored, as Mountpoint ignores them.
        let mut extra = good;
        extra.metadata.insert("mount-s3-write".into(), "x".into());
        assert_eq!(layout.verify("k", "\"e1\"", 48, 2, &extra), Ok(()));
    }

    proptest::proptest! {
        #![proptest_config(crate::testing::fuzz_config())]
        /// Whatever a cache bucket answers (any metadata, any body, any checksum), checking
        /// it never panics, and it passes only if it is the block asked for.
        #[test]
        fn untrusted_blocks_are_checked_without_panic(
            names in proptest::collection::vec("[a-z-]{1,20}", 0..10),
            values in proptest::collection::vec(".{0,40}", 0..10),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            crc in proptest::option::of(".{0,12}"),
            size in proptest::prelude::any::<u64>(),
            index in proptest::prelude::any::<u64>(),
        ) {
            let layout = Layout::new("src", 32);
            let block = TaggedObject {
                data: Bytes::from(body),
                metadata: names.into_iter().zip(values).collect(),
                crc32c: crc,
            };
            let _ = layout.block_key("k", "\"e\"", index);
            if layout.verify("k", "\"e\"", size, index, &block).is_ok() {
                let want = layout.block_put("k", "\"e\"", index, &block.data);
                let meta: std::collections::BTreeMap<_, _> = want.metadata.into_iter().collect();
                proptest::prop_assert_eq!(&meta["header-checksum"], &block.metadata["header-checksum"]);
            }
        }
    }
}
