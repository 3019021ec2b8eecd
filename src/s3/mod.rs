//! The object store: the only door from the filesystem to S3.
//!
//! `fs/` sees storage only through [`ObjectStore`], so the SDK can be swapped (or faked with
//! the in-memory store of the unit tests, `in_memory`, compiled only for them) without
//! touching filesystem logic. This module does not
//! decide what an error means for a POSIX caller; `fs::error` does that.

pub mod config;
pub mod deadline;
pub mod error;
#[cfg(test)]
pub mod faulty;
pub mod health;
#[cfg(test)]
pub mod in_memory;
pub mod posix;
pub mod sdk;

use std::future::Future;
use std::ops::Range;
use std::time::SystemTime;

use bytes::Bytes;

pub use config::S3Config;
pub use error::S3Error;
pub use posix::Posix;

/// What a HEAD (or a listing entry) says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Full key in the bucket.
    pub key: String,
    /// ContentLength in bytes.
    pub size: u64,
    /// LastModified.
    pub last_modified: SystemTime,
    /// ETag as the server sent it (quotes included); pinned by readers for If-Match.
    pub etag: String,
    /// The [`WriteOptions::write_id`] stored with the object when mount-s3 wrote it (HEAD
    /// only; listings do not carry metadata).
    pub write_id: Option<String>,
    /// POSIX attributes from user metadata (HEAD only; see [`posix`]).
    pub posix: Option<Posix>,
}

/// How a write (a PUT, or a multipart upload from create to complete) is made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// A random id stored with the object as user metadata ([`WRITE_ID_METADATA`]), so that a
    /// write whose answer was lost can be recognised as ours by a HEAD instead of guessed.
    pub write_id: String,
    /// Write only if no object of that key exists (`If-None-Match: *`): for O_EXCL creates
    /// and for new files on a mount without `--allow-overwrite`. A server that does not know
    /// the header ignores it; the filesystem has checked before creating.
    pub if_none_match: bool,
    /// Write only while the object there still has this ETag (`If-Match`): a staged file
    /// replaces exactly the version it started from, or nothing.
    pub if_match: Option<String>,
    /// POSIX attributes stored with the object (`--posix-metadata`; see [`posix`]).
    pub posix: Option<Posix>,
    /// Content-Type of the object; inferred from the key (or none) when not given.
    pub content_type: Option<String>,
    /// Other user metadata to store (a copy's source's, when the copy cannot keep it by
    /// itself), names without `x-amz-meta-`.
    pub kept_metadata: Vec<(String, String)>,
}

/// The user-metadata name under which [`WriteOptions::write_id`] is stored
/// (`x-amz-meta-mount-s3-write`).
pub const WRITE_ID_METADATA: &str = "mount-s3-write";

/// What a server-side copy made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// ETag of the new object.
    pub etag: String,
    /// Its LastModified (now, when the server does not say).
    pub last_modified: SystemTime,
}

/// One page of a ListObjectsV2 call.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Objects whose keys start with the prefix (and hold no delimiter after it).
    pub objects: Vec<ObjectInfo>,
    /// Common prefixes (each ends with the delimiter), in key order.
    pub common_prefixes: Vec<String>,
    /// Token for the next page; `None` when this was the last page.
    pub next_token: Option<String>,
}

/// One uploaded part of a multipart upload, as CompleteMultipartUpload needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartTag {
    /// 1-based part number.
    pub number: i32,
    /// The part's ETag.
    pub etag: String,
    /// Its checksum (base64) in the upload's algorithm, when uploads carry checksums.
    pub checksum: Option<String>,
}

/// A small object with its user metadata, as the shared cache stores its blocks
/// ([`BlockStore`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaggedObject {
    /// The body.
    pub data: Bytes,
    /// User metadata, by name without `x-amz-meta-` (lower case, as S3 keeps it).
    pub metadata: std::collections::BTreeMap<String, String>,
    /// The object's CRC32C as the server reports it (`x-amz-checksum-crc32c`), if it does.
    pub crc32c: Option<String>,
}

/// How a tagged object is written: one PUT with this user metadata and CRC32C (base64),
/// which the server checks; a storage class only where asked (the shared cache's start-up
/// probe of a directory bucket). Server-side encryption follows the store's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaggedPut {
    /// User metadata, by name without `x-amz-meta-`.
    pub metadata: Vec<(String, String)>,
    /// The body's CRC32C, base64 of its four big-endian bytes.
    pub crc32c: Option<String>,
    /// Storage class of the object.
    pub storage_class: Option<String>,
}

/// A future a [`BlockStore`] returns (boxed, so the trait can be a trait object).
pub type StoreFuture<'a, T> =
    std::pin::Pin<Box<dyn Future<Output = Result<T, S3Error>> + Send + 'a>>;

/// A bucket of small tagged objects: the shared cache's blocks (`--cache-xz`). Separate from
/// [`ObjectStore`] because the filesystem never needs metadata this way, and a trait object
/// so the cache is not generic over its store.
pub trait BlockStore: Send + Sync + std::fmt::Debug + 'static {
    /// Writes `data` as `key` with `put`'s metadata and checksum.
    fn put_tagged(&self, key: &str, data: Bytes, put: TaggedPut) -> StoreFuture<'_, ()>;

    /// Reads `key` whole with its metadata (and its CRC32C where the server gives it);
    /// `None` if there is no such key.
    fn get_tagged(&self, key: &str) -> StoreFuture<'_, Option<TaggedObject>>;
}

/// S3's largest object (5 TiB).
pub const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024 * 1024;

/// S3's largest single PUT or CopyObject (5 GiB).
pub const MAX_SINGLE_OBJECT: u64 = 5 * 1024 * 1024 * 1024;

/// S3's most parts in one multipart upload.
pub const MAX_PARTS: i32 = 10_000;

/// The calls the filesystem makes on a bucket. Keys are full keys (the mount's `--prefix`
/// included); the bucket is fixed when the store is built.
pub trait ObjectStore: Send + Sync + 'static {
    /// HEAD one key.
    fn head(&self, key: &str) -> impl Future<Output = Result<ObjectInfo, S3Error>> + Send;

    /// One page of ListObjectsV2 under `prefix`, split on `/` when `delimited`.
    fn list(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
        max_keys: usize,
    ) -> impl Future<Output = Result<ListPage, S3Error>> + Send;

    /// The bytes of `range` of `key`, only if the object still has ETag `if_match` (when given).
    /// The range must lie inside the object.
    fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> impl Future<Output = Result<Bytes, S3Error>> + Send;

    /// Stores `data` as `key` in one PUT as `options` say; returns the new ETag.
    fn put(
        &self,
        key: &str,
        data: Bytes,
        options: &WriteOptions,
    ) -> impl Future<Output = Result<String, S3Error>> + Send;

    /// Starts a multipart upload of `key` (carrying `options.write_id`); returns its upload
    /// id.
    fn create_multipart(
        &self,
        key: &str,
        options: &WriteOptions,
    ) -> impl Future<Output = Result<String, S3Error>> + Send;

    /// Uploads part `number` (1-based) of an upload.
    fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        data: Bytes,
    ) -> impl Future<Output = Result<PartTag, S3Error>> + Send;

    /// Completes an upload from its parts (in order), with `options.if_none_match` as its
    /// condition; returns the object's ETag. Only now does the object appear.
    fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<PartTag>,
        options: &WriteOptions,
    ) -> impl Future<Output = Result<String, S3Error>> + Send;

    /// Copies `range` of `from` on the server, only while `from` has ETag `if_match`, as
    /// part `number` (1-based) of an upload to `key` (UploadPartCopy).
    fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        from: &str,
        range: Range<u64>,
        if_match: &str,
    ) -> impl Future<Output = Result<PartTag, S3Error>> + Send;

    /// Abandons an upload and frees its parts.
    fn abort_multipart(
        &self,
        key: &str,
        upload_id: &str,
    ) -> impl Future<Output = Result<(), S3Error>> + Send;

    /// Deletes `key` (no error if it is already gone), only while it has ETag `if_match`
    /// when given (a server that ignores the condition deletes whatever is there).
    fn delete(
        &self,
        key: &str,
        if_match: Option<&str>,
    ) -> impl Future<Output = Result<(), S3Error>> + Send;

    /// Copies `from` (of `size` bytes) to `to` on the server side, only while `from` has ETag
    /// `if_match` (every request of the copy carries the condition): CopyObject, or a
    /// multipart copy for objects over 5 GiB, aborted if any part fails. The copy keeps the
    /// source's metadata; with `posix`, those attributes replace the source's (the rest of
    /// its user metadata and its Content-Type are kept): chmod, chown and utimes are a copy
    /// of an object onto itself.
    fn copy(
        &self,
        from: &str,
        to: &str,
        size: u64,
        if_match: &str,
        posix: Option<&Posix>,
    ) -> impl Future<Output = Result<Copied, S3Error>> + Send;
}
