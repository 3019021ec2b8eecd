//! An in-memory [`ObjectStore`] for unit tests: a sorted map of keys, with S3's listing rules
//! (prefix, `/` delimiter, pages, continuation tokens) and ETags that change on every put.
//! It accepts any key, including ones a real server would refuse, so the filesystem's
//! hidden-name rules can be tested against them.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;

use super::{
    BlockStore, Copied, ListPage, ObjectInfo, ObjectStore, PartTag, Posix, S3Error, StoreFuture,
    TaggedObject, TaggedPut, WriteOptions,
};

#[derive(Debug, Clone)]
struct StoredObject {
    data: Bytes,
    etag: String,
    last_modified: SystemTime,
    /// The write id the writer gave, as user metadata holds it.
    write_id: Option<String>,
    /// POSIX attributes stored as user metadata.
    posix: Option<Posix>,
}

/// A multipart upload in progress: its key, the options given at create, and the parts
/// received, by number.
type PendingUpload = (String, WriteOptions, BTreeMap<i32, Bytes>);

/// 412, as S3 answers a failed condition.
fn precondition_failed() -> S3Error {
    S3Error::PreconditionFailed
}

/// A bucket held in memory.
#[derive(Debug, Default)]
pub struct InMemoryStore {
    /// The objects, by key; one lock, held only to copy in or out.
    objects: Mutex<BTreeMap<String, StoredObject>>,
    /// Source of fresh ETags and upload ids.
    next_etag: AtomicU64,
    /// Multipart uploads in progress: upload id → (key, parts by number).
    uploads: Mutex<BTreeMap<String, PendingUpload>>,
    /// LIST requests answered.
    lists: AtomicU64,
    /// HEAD requests answered.
    heads: AtomicU64,
    /// Listings in no particular order (as a directory bucket's), shuffled by this seed.
    unordered: Option<u64>,
    /// Objects written with metadata through [`BlockStore`] (the shared cache's blocks).
    tagged: Mutex<BTreeMap<String, TaggedObject>>,
    /// [`BlockStore`] GETs and PUTs answered.
    tagged_gets: AtomicU64,
    tagged_puts: AtomicU64,
    /// Smallest part but the last a complete accepts (S3's 5 MiB with
    /// [`InMemoryStore::with_s3_part_sizes`]; any by default, so tests can use tiny parts).
    min_part: u64,
    /// Bytes uploaded as parts or PUT bodies, and bytes copied by UploadPartCopy.
    uploaded_bytes: AtomicU64,
    copied_bytes: AtomicU64,
    /// Bytes answered to ranged GETs.
    fetched_bytes: AtomicU64,
}

impl InMemoryStore {
    /// An empty bucket.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty bucket that lists as an S3 Express directory bucket does: every page in an
    /// order of its own (here a shuffle by `seed`), entries of one listing spread across
    /// pages in that order, and the token an offset rather than a key.
    pub fn unordered(seed: u64) -> Self {
        Self {
            unordered: Some(seed),
            ..Self::default()
        }
    }

    /// The same, refusing at complete a part but the last under 5 MiB, as S3 does.
    pub fn with_s3_part_sizes(mut self) -> Self {
        self.min_part = 5 * 1024 * 1024;
        self
    }

    /// Bytes answered to ranged GETs so far.
    pub fn fetched(&self) -> u64 {
        self.fetched_bytes.load(Ordering::Relaxed)
    }

    /// Bytes sent so far as PUT bodies and parts, and bytes copied server-side by
    /// UploadPartCopy.
    pub fn transferred(&self) -> (u64, u64) {
        (
            self.uploaded_bytes.load(Ordering::Relaxed),
            self.copied_bytes.load(Ordering::Relaxed),
        )
    }

    /// Stores `data` under `key`, replacing any object there with a new ETag (as another
    /// client would: no write id).
    pub fn put(&self, key: &str, data: impl Into<Bytes>) -> String {
        self.store(key, data.into(), None, None)
    }

    /// The POSIX attributes stored with `key`, if any.
    pub fn posix(&self, key: &str) -> Option<Posix> {
        self.lock().get(key).and_then(|o| o.posix)
    }

    /// Stores `data` under `key` with POSIX attributes in its metadata, as s3fs would.
    pub fn put_with_posix(&self, key: &str, data: impl Into<Bytes>, posix: Posix) -> String {
        self.store(key, data.into(), None, Some(posix))
    }

    fn store(
        &self,
        key: &str,
        data: Bytes,
        write_id: Option<String>,
        posix: Option<Posix>,
    ) -> String {
        let etag = format!("\"{}\"", self.next_etag.fetch_add(1, Ordering::Relaxed));
        let object = StoredObject {
            data,
            etag: etag.clone(),
            last_modified: SystemTime::now(),
            write_id,
            posix,
        };
        self.lock().insert(key.to_string(), object);
        etag
    }

    /// Stores `data` under `key` unless `options` asks for no existing object and there is
    /// one; checked and stored under one lock, as a server would.
    fn store_if(&self, key: &str, data: Bytes, options: &WriteOptions) -> Result<String, S3Error> {
        let mut objects = self.lock();
        if options.if_none_match && objects.contains_key(key) {
            return Err(precondition_failed());
        }
        if let Some(etag) = &options.if_match
            && objects.get(key).is_none_or(|o| o.etag != *etag)
        {
            return Err(precondition_failed());
        }
        let etag = format!("\"{}\"", self.next_etag.fetch_add(1, Ordering::Relaxed));
        let object = StoredObject {
            data,
            etag: etag.clone(),
            last_modified: SystemTime::now(),
            write_id: Some(options.write_id.clone()),
            posix: options.posix,
        };
        objects.insert(key.to_string(), object);
        Ok(etag)
    }

    /// The ETag of `key`, if it exists.
    pub fn etag(&self, key: &str) -> Option<String> {
        self.lock().get(key).map(|o| o.etag.clone())
    }

    /// Keys held, in order.
    pub fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// The bytes stored under `key`.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.lock().get(key).map(|o| o.data.clone())
    }

    /// Number of LIST requests answered so far.
    pub fn list_calls(&self) -> u64 {
        self.lists.load(Ordering::Relaxed)
    }

    /// Number of HEAD requests answered so far.
    pub fn head_calls(&self) -> u64 {
        self.heads.load(Ordering::Relaxed)
    }

    /// Number of multipart uploads neither completed nor aborted.
    pub fn open_uploads(&self) -> usize {
        self.uploads.lock().expect("uploads lock poisoned").len()
    }

    /// Removes `key` if present.
    pub fn delete(&self, key: &str) {
        self.lock().remove(key);
    }

    /// The tagged object under `key` (the shared cache's block), as stored.
    pub fn tagged(&self, key: &str) -> Option<TaggedObject> {
        self.tagged_lock().get(key).cloned()
    }

    /// Replaces (or, with `None`, removes) the tagged object under `key`, as another client
    /// would, bypassing every check.
    pub fn set_tagged(&self, key: &str, object: Option<TaggedObject>) {
        match object {
            Some(object) => self.tagged_lock().insert(key.to_string(), object),
            None => self.tagged_lock().remove(key),
        };
    }

    /// Keys of the tagged objects, in order.
    pub fn tagged_keys(&self) -> Vec<String> {
        self.tagged_lock().keys().cloned().collect()
    }

    /// [`BlockStore`] GETs and PUTs answered so far.
    pub fn tagged_calls(&self) -> (u64, u64) {
        (
            self.tagged_gets.load(Ordering::Relaxed),
            self.tagged_puts.load(Ordering::Relaxed),
        )
    }

    fn tagged_lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, TaggedObject>> {
        self.tagged.lock().expect("tagged lock poisoned")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, StoredObject>> {
        self.objects.lock().expect("memory store lock poisoned")
    }
}

fn info(key: &str, object: &StoredObject) -> ObjectInfo {
    ObjectInfo {
        key: key.to_string(),
        size: object.data.len() as u64,
        last_modified: object.last_modified,
        etag: object.etag.clone(),
        write_id: object.write_id.clone(),
        posix: object.posix,
    }
}

impl InMemoryStore {
    /// One page of a listing in key order, as a general-purpose bucket lists: the token is
    /// the last key (or common prefix) handed out.
    fn sorted_page(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
        max_keys: usize,
    ) -> ListPage {
        let objects = self.lock();
        let mut page = ListPage::default();
        let mut count = 0;
        // The token is the last key (or common prefix) handed out; resume strictly after it.
        let start = token.unwrap_or_default();
        let resumed_prefix = delimited && start.len() > prefix.len() && start.ends_with('/');
        let from = if start.as_str() > prefix {
            &start
        } else {
            prefix
        };
        for (key, object) in objects.range(from.to_string()..) {
            if !key.starts_with(prefix) {
                break;
            }
            let already_listed = !start.is_empty()
                && (key.as_str() <= start.as_str() || resumed_prefix && key.starts_with(&start));
            if already_listed {
                continue;
            }
            let rest = &key[prefix.len()..];
            let common = delimited
                .then(|| rest.find('/'))
                .flatten()
                .map(|i| format!("{prefix}{}", &rest[..=i]));
            if common.is_some() && common.as_ref() == page.common_prefixes.last() {
                continue;
            }
            if count == max_keys {
                page.next_token = Some(max_token(&page));
                return page;
            }
            match common {
                Some(common) => page.common_prefixes.push(common),
                None => page.objects.push(ObjectInfo {
                    write_id: None, // listings carry no metadata
                    posix: None,
                    ..info(key, object)
                }),
            }
            count += 1;
        }
        page
    }

    /// One page of a directory bucket's listing: the whole listing in key order, shuffled
    /// by `seed` and the prefix, cut into pages; the token is the offset of the next page.
    fn shuffled_page(
        &self,
        seed: u64,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
        max_keys: usize,
    ) -> Result<ListPage, S3Error> {
        use std::hash::{Hash, Hasher};
        let all = self.sorted_page(prefix, delimited, None, usize::MAX);
        let mut entries: Vec<(u64, Result<ObjectInfo, String>)> = all
            .objects
            .into_iter()
            .map(Ok)
            .chain(all.common_prefixes.into_iter().map(Err))
            .map(|entry| {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                (seed, prefix, entry.as_ref().map(|o| &o.key)).hash(&mut hasher);
                (hasher.finish(), entry)
            })
            .collect();
        entries.sort_by_key(|(rank, _)| *rank);
        let from: usize = match token {
            None => 0,
            Some(t) => t.parse().map_err(|_| S3Error::Service {
                status: 400,
                code: "InvalidArgument".into(),
                message: format!("bad continuation token {t:?}"),
            })?,
        };
        let total = entries.len();
        let from = from.min(total);
        let to = from.saturating_add(max_keys.max(1)).min(total);
        let mut page = ListPage::default();
        for (_, entry) in entries.drain(from..to) {
            match entry {
                Ok(object) => page.objects.push(object),
                Err(common) => page.common_prefixes.push(common),
            }
        }
        page.next_token = (to < total).then(|| to.to_string());
        Ok(page)
    }
}

impl ObjectStore for InMemoryStore {
    async fn head(&self, key: &str) -> Result<ObjectInfo, S3Error> {
        self.heads.fetch_add(1, Ordering::Relaxed);
        let objects = self.lock();
        objects
            .get(key)
            .map(|o| info(key, o))
            .ok_or(S3Error::NotFound)
    }

    async fn list(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<String>,
        max_keys: usize,
    ) -> Result<ListPage, S3Error> {
        self.lists.fetch_add(1, Ordering::Relaxed);
        match self.unordered {
            None => Ok(self.sorted_page(prefix, delimited, token, max_keys)),
            Some(seed) => self.shuffled_page(seed, prefix, delimited, token, max_keys),
        }
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes, S3Error> {
        let objects = self.lock();
        let object = objects.get(key).ok_or(S3Error::NotFound)?;
        if if_match.is_some_and(|etag| etag != object.etag) {
            return Err(S3Error::PreconditionFailed);
        }
        let len = object.data.len() as u64;
        if range.start > range.end || range.end > len {
            return Err(S3Error::Service {
                status: 416,
                code: "InvalidRange".into(),
                message: format!("{range:?} outside 0..{len}"),
            });
        }
        self.fetched_bytes
            .fetch_add(range.end - range.start, Ordering::Relaxed);
        Ok(object.data.slice(range.start as usize..range.end as usize))
    }

    async fn put(&self, key: &str, data: Bytes, options: &WriteOptions) -> Result<String, S3Error> {
        self.uploaded_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        self.store_if(key, data, options)
    }

    async fn create_multipart(&self, key: &str, options: &WriteOptions) -> Result<String, S3Error> {
        let id = format!("upload-{}", self.next_etag.fetch_add(1, Ordering::Relaxed));
        self.uploads.lock().expect("uploads lock poisoned").insert(
            id.clone(),
            (key.to_string(), options.clone(), BTreeMap::new()),
        );
        Ok(id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        data: Bytes,
    ) -> Result<PartTag, S3Error> {
        self.uploaded_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let mut uploads = self.uploads.lock().expect("uploads lock poisoned");
        let (upload_key, _, parts) = uploads.get_mut(upload_id).ok_or(S3Error::NotFound)?;
        assert_eq!(upload_key, key, "part for another key");
        parts.insert(number, data);
        Ok(PartTag {
            number,
            etag: format!("\"part-{number}\""),
            checksum: None,
        })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<PartTag>,
        options: &WriteOptions,
    ) -> Result<String, S3Error> {
        let mut uploads = self.uploads.lock().expect("uploads lock poisoned");
        let (_, created, stored) = uploads.get(upload_id).ok_or(S3Error::NotFound)?;
        let mut data = Vec::new();
        for (i, tag) in parts.iter().enumerate() {
            let part = stored.get(&tag.number).ok_or(S3Error::Service {
                status: 400,
                code: "InvalidPart".into(),
                message: format!("part {} was not uploaded", tag.number),
            })?;
            if i + 1 < parts.len() && (part.len() as u64) < self.min_part {
                return Err(S3Error::Service {
                    status: 400,
                    code: "EntityTooSmall".into(),
                    message: format!("part {} is {} bytes", tag.number, part.len()),
                });
            }
            data.extend_from_slice(part);
        }
        // Metadata is given at create, conditions at complete.
        let options = WriteOptions {
            if_none_match: options.if_none_match,
            if_match: options.if_match.clone(),
            ..created.clone()
        };
        let etag = self.store_if(key, data.into(), &options)?;
        uploads.remove(upload_id);
        Ok(etag)
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        from: &str,
        range: Range<u64>,
        if_match: &str,
    ) -> Result<PartTag, S3Error> {
        let source = self.lock().get(from).cloned().ok_or(S3Error::NotFound)?;
        if source.etag != if_match {
            return Err(precondition_failed());
        }
        if range.start >= range.end || range.end > source.data.len() as u64 {
            return Err(S3Error::Service {
                status: 416,
                code: "InvalidRange".into(),
                message: format!("{range:?} outside 0..{}", source.data.len()),
            });
        }
        self.copied_bytes
            .fetch_add(range.end - range.start, Ordering::Relaxed);
        let data = source.data.slice(range.start as usize..range.end as usize);
        let mut uploads = self.uploads.lock().expect("uploads lock poisoned");
        let (upload_key, _, parts) = uploads.get_mut(upload_id).ok_or(S3Error::NotFound)?;
        assert_eq!(upload_key, key, "part for another key");
        parts.insert(number, data);
        Ok(PartTag {
            number,
            etag: format!("\"copy-{number}\""),
            checksum: None,
        })
    }

    async fn abort_multipart(&self, _key: &str, upload_id: &str) -> Result<(), S3Error> {
        self.uploads
            .lock()
            .expect("uploads lock poisoned")
            .remove(upload_id);
        Ok(())
    }

    async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<(), S3Error> {
        let mut objects = self.lock();
        match (objects.get(key), if_match) {
            (Some(object), Some(etag)) if object.etag != etag => Err(precondition_failed()),
            _ => {
                objects.remove(key);
                Ok(())
            }
        }
    }

    async fn copy(
        &self,
        from: &str,
        to: &str,
        _size: u64,
        if_match: &str,
        posix: Option<&Posix>,
    ) -> Result<Copied, S3Error> {
        let source = self.lock().get(from).cloned().ok_or(S3Error::NotFound)?;
        if source.etag != if_match {
            return Err(precondition_failed());
        }
        // CopyObject keeps the source's metadata, but for the attributes it replaces.
        let posix = match (source.posix, posix) {
            (Some(current), Some(change)) => Some(current.merged(change)),
            (current, change) => change.copied().or(current),
        };
        let replaced = posix != source.posix;
        let etag = self.store(to, source.data, source.write_id, posix);
        // As S3: a copy of the same bytes keeps the source's ETag (the MD5 of one part);
        // a copy onto itself that changes metadata gets a new one here, so that a test
        // can tell the versions apart.
        let etag = match replaced {
            true => etag,
            false => {
                self.lock().get_mut(to).expect("just stored").etag = source.etag.clone();
                source.etag
            }
        };
        Ok(Copied {
            etag,
            last_modified: SystemTime::now(),
        })
    }
}

/// CRC32C as S3 writes it in `x-amz-checksum-crc32c`: base64 of its four big-endian bytes.
fn crc32c_base64(data: &[u8]) -> String {
    aws_smithy_types::base64::encode(crc32c::crc32c(data).to_be_bytes())
}

impl BlockStore for InMemoryStore {
    fn put_tagged(&self, key: &str, data: Bytes, put: TaggedPut) -> StoreFuture<'_, ()> {
        let key = key.to_string();
        Box::pin(async move {
            self.tagged_puts.fetch_add(1, Ordering::Relaxed);
            let crc = crc32c_base64(&data);
            if put.crc32c.as_ref().is_some_and(|given| *given != crc) {
                return Err(S3Error::Service {
                    status: 400,
                    code: "BadDigest".into(),
                    message: "the CRC32C you specified did not match the body".into(),
                });
            }
            let object = TaggedObject {
                data,
                metadata: put.metadata.into_iter().collect(),
                crc32c: Some(crc),
            };
            self.tagged_lock().insert(key, object);
            Ok(())
        })
    }

    fn get_tagged(&self, key: &str) -> StoreFuture<'_, Option<TaggedObject>> {
        let key = key.to_string();
        Box::pin(async move {
            self.tagged_gets.fetch_add(1, Ordering::Relaxed);
            Ok(self.tagged_lock().get(&key).cloned())
        })
    }
}

/// The greatest key or common prefix in `page`: where the next page resumes.
fn max_token(page: &ListPage) -> String {
    let last_object = page.objects.last().map(|o| o.key.as_str());
    let last_prefix = page.common_prefixes.last().map(String::as_str);
    last_object.max(last_prefix).unwrap_or_default().to_string()
}
