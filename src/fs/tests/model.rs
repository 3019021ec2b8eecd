//! A reference model of the namespace, reads and writes, checked by proptest.
//!
//! A random bucket (up to 8 keys over the names `a`, `a-b`, `b`, `c`, where `a-b` sorts
//! between `a` and `a/`; some `dir/` markers) and random steps run on the filesystem over the
//! in-memory store and on a plain model: the bucket as a map of keys to bytes, plus the
//! directories made by mkdir that hold no committed file yet. Every answer is compared:
//! success or errno, kind and size from lookup, whole listings (two keys per LIST, three
//! entries per readdir), read bytes (past the end included). After every step the store must
//! hold exactly the model's keys and bytes, with no upload and no handle left open. Paths are
//! walked as the kernel does, one lookup per component; other clients' puts and deletes, the
//! kernel forgetting every inode it holds, and remounts are steps too. Most steps name what
//! exists when they run (picked by index), so that they do more than fail.
//!
//! The model is the documented behaviour (README, "What POSIX means here"): a name is a
//! directory if a key lies under `name/` (a common prefix or a marker), or if mkdir made it
//! (until rmdir or a remount); a directory shadows a file of the same name; otherwise a name
//! is a file if its key exists. (This model found three ways to lose a directory made by
//! mkdir: with its parent's last key, when the kernel forgot the parent, and under another
//! client's object of the same name; all three are fixed and checked here.)
//!
//! `model_matches_filesystem` is the CI run (256 cases, fixed seed); `model_long_run` takes
//! `MOUNT_S3_MODEL_CASES` (default 256) and `MOUNT_S3_MODEL_SEED` (default fixed), with up to
//! 40 steps: `MOUNT_S3_MODEL_CASES=20000 cargo test --lib model` is the long run.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

use super::*;

mod reference;
use reference::{Model, split};

/// Path components: a tiny alphabet, so that names collide often.
const NAMES: [&str; 4] = ["a", "a-b", "b", "c"];
/// The CI run's seed.
const CI_SEED: u64 = 0x6d6f_756e_7433;

/// Object contents, generated compactly: `len` bytes of a pattern picked by `seed`.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Data {
    len: usize,
    seed: u8,
}

impl Data {
    /// The bytes (a mix of offset and seed, so a shifted read shows).
    fn bytes(self) -> Vec<u8> {
        let mix = |i: u64| {
            let x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(self.seed);
            ((x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 32) as u8
        };
        (0..self.len as u64).map(mix).collect()
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}B#{}", self.len, self.seed)
    }
}

/// What a step names: a path over [`NAMES`], or, picked by index when the step runs, a
/// name that exists then (with a component added: a new name in an existing directory).
#[derive(Debug, Clone)]
enum Target {
    Path(String),
    Known(Index, Option<&'static str>),
}

impl Target {
    /// The path named: one of `known` (what exists, of the kind the step wants), or with a
    /// component added, a name in one of `dirs` (`""` is the root).
    fn pick(&self, known: &[String], dirs: &[String]) -> String {
        let (pick, child) = match self {
            Target::Path(path) => return path.clone(),
            Target::Known(pick, child) => (pick, *child),
        };
        let from = if child.is_some() { dirs } else { known };
        let base = from.get(pick.index(from.len().max(1)));
        match (base.map_or("", String::as_str), child) {
            ("", child) => child.unwrap_or("a").to_string(),
            (base, None) => base.to_string(),
            (base, Some(child)) => format!("{base}/{child}"),
        }
    }
}

/// One step, on the filesystem (as a program would) or on the store (as another client),
/// naming paths as `P`: generated as [`Target`]s, run as strings.
#[derive(Debug, Clone)]
enum Op<P> {
    Lookup(P),
    /// The whole listing of a directory (`""` is the root).
    ListDir(P),
    /// Open, then reads of (offset, length), then release.
    Read(P, Vec<(u64, u32)>),
    /// Create (or open with O_TRUNC), sequential writes of `chunk` bytes, close, release.
    Write(P, Data, usize),
    Unlink(P),
    Mkdir(P),
    Rmdir(P),
    Rename(P, P),
    /// Another client puts an object, or with no data a `P/` marker.
    RemotePut(P, Option<Data>),
    /// Another client deletes a key (generated: picked among the bucket's).
    RemoteDelete(P),
    /// The kernel forgets every inode it was given (as under memory pressure).
    Forget,
    /// A new filesystem over the same store.
    Remount,
}

impl Op<Target> {
    /// The step with its paths picked from what `model` holds now.
    fn resolve(&self, model: &Model) -> Op<String> {
        let names = model.names();
        let of = |kind| -> Vec<String> {
            let of_kind = |n: &&String| model.kind(n) == Some(kind);
            names.iter().filter(of_kind).cloned().collect()
        };
        let (files, dirs) = (of(Kind::File), of(Kind::Dir));
        let with_root: Vec<String> = [String::new()].into_iter().chain(dirs.clone()).collect();
        let keys: Vec<String> = model.keys.keys().cloned().collect();
        let pick = |t: &Target, known: &[String]| t.pick(known, &with_root);
        match self {
            Op::Lookup(t) => Op::Lookup(pick(t, &names)),
            Op::ListDir(t) => Op::ListDir(pick(t, &with_root)),
            Op::Read(t, reads) => Op::Read(pick(t, &files), reads.clone()),
            Op::Write(t, data, chunk) => Op::Write(pick(t, &files), *data, *chunk),
            Op::Unlink(t) => Op::Unlink(pick(t, &files)),
            Op::Mkdir(t) => Op::Mkdir(pick(t, &names)),
            Op::Rmdir(t) => Op::Rmdir(pick(t, &dirs)),
            Op::Rename(from, to) => Op::Rename(pick(from, &files), pick(to, &names)),
            Op::RemotePut(t, Some(data)) => Op::RemotePut(pick(t, &names), Some(*data)),
            Op::RemotePut(t, None) => Op::RemotePut(format!("{}/", pick(t, &names)), None),
            Op::RemoteDelete(t) => Op::RemoteDelete(pick(t, &keys)),
            Op::Forget => Op::Forget,
            Op::Remount => Op::Remount,
        }
    }
}

/// An errno, shown as its message.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Errno(i32);

const ENOENT: Errno = Errno(libc::ENOENT);
const ENOTDIR: Errno = Errno(libc::ENOTDIR);
const EISDIR: Errno = Errno(libc::EISDIR);
const EEXIST: Errno = Errno(libc::EEXIST);
const ENOTEMPTY: Errno = Errno(libc::ENOTEMPTY);
const EXDEV: Errno = Errno(libc::EXDEV);

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.0))
    }
}

impl From<FsError> for Errno {
    fn from(e: FsError) -> Self {
        Errno(e.errno())
    }
}

/// What a step answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Done,
    /// Kind and size of a lookup (0 for directories).
    Attr(Kind, u64),
    /// A listing without `.` and `..`, sorted.
    Listing(Vec<(String, Kind)>),
    /// The bytes of each read.
    Bytes(Vec<Vec<u8>>),
}

type Outcome = Result<Answer, Errno>;

/// The mount's settings: every change allowed, nothing cached, listings paged.
fn config() -> FsConfig {
    FsConfig {
        metadata_ttl: Duration::ZERO,
        allow_delete: true,
        allow_overwrite: true,
        read_part_size: 5 * 1024 * 1024,
        write_part_size: 5 * 1024 * 1024,
        list_page_size: 2,
        ..FsConfig::default()
    }
}

/// The filesystem under test, driven as the kernel would, with the lookups it was given. A
/// step's directories are walked; its last component is left to the call (unlink, mkdir,
/// rename, create), except that rmdir and writes look it up first, as the kernel does.
struct Harness {
    store: Arc<InMemoryStore>,
    fs: S3Filesystem<InMemoryStore>,
    /// Lookups replied, by inode (given back by `Op::Forget`).
    lookups: HashMap<u64, u64>,
}

impl Harness {
    /// Counts a reply that gives the kernel a lookup (lookup, create, mkdir).
    fn held(&mut self, attr: Attr) -> Attr {
        *self.lookups.entry(attr.ino).or_default() += 1;
        attr
    }

    /// Walks `path` from the root, one lookup per component (`""` is the root).
    async fn walk(&mut self, path: &str) -> Result<Attr, Errno> {
        let mut attr = self.fs.getattr(ROOT_INO).await?;
        for name in path.split('/').filter(|n| !n.is_empty()) {
            attr = self.fs.lookup(attr.ino, name).await?;
            attr = self.held(attr);
        }
        Ok(attr)
    }

    /// The inode of the directory of `path` (walked) and its last component.
    async fn parent<'p>(&mut self, path: &'p str) -> Result<(u64, &'p str), Errno> {
        let (dir, name) = split(path);
        Ok((self.walk(dir).await?.ino, name))
    }

    /// The whole listing of directory `ino`, three entries per readdir; `.` and `..` are
    /// checked to come first, and left out.
    async fn list(&mut self, ino: u64) -> Outcome {
        let fh = self.fs.opendir(ino)?;
        let (mut names, mut offset) = (Vec::new(), 0);
        let result = loop {
            match self.fs.readdir(ino, fh, offset, 3).await {
                Ok(batch) if batch.is_empty() => break Ok(()),
                Ok(batch) => {
                    offset = batch.last().expect("not empty").next_offset;
                    names.extend(batch.into_iter().map(|e| (e.name, e.attr.kind)));
                }
                Err(e) => break Err(Errno::from(e)),
            }
            assert!(names.len() < 10_000, "the listing never ends");
        };
        self.fs.releasedir(fh);
        result?;
        let dots = [(".".into(), Kind::Dir), ("..".into(), Kind::Dir)];
        assert!(
            names.starts_with(&dots),
            "a listing starts with . and ..: {names:?}"
        );
        let mut names = names.split_off(2);
        names.sort();
        Ok(Answer::Listing(names))
    }

    /// Opens `ino` for reading, reads each (offset, length), releases.
    async fn read(&mut self, ino: u64, reads: &[(u64, u32)]) -> Outcome {
        let fh = self.fs.open(ino, OpenMode::default(), me()).await?;
        let mut out = Vec::new();
        for &(offset, len) in reads {
            match self.fs.read(fh, offset, len).await {
                Ok(bytes) => out.push(bytes.to_vec()),
                Err(e) => {
                    self.fs.release(fh).await;
                    return Err(e.into());
                }
            }
        }
        self.fs.release(fh).await;
        Ok(Answer::Bytes(out))
    }

    /// Creates `path` (or opens it with O_TRUNC if it exists), writes `data` sequentially
    /// in chunks, closes (the commit) and releases.
    async fn write(&mut self, path: &str, data: &[u8], chunk: usize) -> Outcome {
        let (parent, name) = self.parent(path).await?;
        let fh = match self.fs.lookup(parent, name).await {
            Ok(attr) => {
                let ino = self.held(attr).ino;
                let trunc = OpenMode {
                    write: true,
                    truncate: true,
                    ..OpenMode::default()
                };
                self.fs.open(ino, trunc, me()).await?
            }
            Err(FsError::NotFound) => {
                let (attr, fh) = self.fs.create(parent, name, me(), false).await?;
                self.held(attr);
                fh
            }
            Err(e) => return Err(e.into()),
        };
        let mut result = Ok(());
        let mut offset = 0;
        for piece in data.chunks(chunk.max(1)) {
            let written = self.fs.write(fh, offset, piece, me()).await;
            result = written.map(|n| assert_eq!(n as usize, piece.len(), "short write"));
            if result.is_err() {
                break;
            }
            offset += piece.len() as u64;
        }
        if result.is_ok() {
            result = self.fs.flush(fh, me()).await;
        }
        self.fs.release(fh).await;
        result.map(|()| Answer::Done).map_err(Errno::from)
    }

    /// Runs `op`.
    async fn apply(&mut self, op: &Op<String>) -> Outcome {
        match op {
            Op::Lookup(path) => {
                let attr = self.walk(path).await?;
                return Ok(Answer::Attr(attr.kind, attr.size));
            }
            Op::ListDir(path) => {
                let ino = self.walk(path).await?.ino;
                return self.list(ino).await;
            }
            Op::Read(path, reads) => {
                let ino = self.walk(path).await?.ino;
                // ESTALE: the kernel looks the name up again and retries the open once.
                return match self.read(ino, reads).await {
                    Err(Errno(libc::ESTALE)) => {
                        let ino = self.walk(path).await?.ino;
                        self.read(ino, reads).await
                    }
                    other => other,
                };
            }
            Op::Write(path, data, chunk) => return self.write(path, &data.bytes(), *chunk).await,
            Op::Unlink(path) => {
                let (parent, name) = self.parent(path).await?;
                self.fs.unlink(parent, name).await?;
            }
            Op::Mkdir(path) => {
                let (parent, name) = self.parent(path).await?;
                let attr = self.fs.mkdir(parent, name).await?;
                self.held(attr);
            }
            Op::Rmdir(path) => {
                // The kernel looks the name up before it asks to remove it.
                let (parent, name) = self.parent(path).await?;
                let attr = self.fs.lookup(parent, name).await?;
                self.held(attr);
                self.fs.rmdir(parent, name).await?;
            }
            Op::Rename(from, to) => {
                let (from_parent, from_name) = self.parent(from).await?;
                let (to_parent, to_name) = self.parent(to).await?;
                let mode = RenameMode::Replace;
                let renamed = self
                    .fs
                    .rename(from_parent, from_name, to_parent, to_name, mode);
                renamed.await?;
            }
            Op::RemotePut(key, data) => {
                self.store.put(key, data.map_or(Vec::new(), Data::bytes));
            }
            Op::RemoteDelete(key) => self.store.delete(key),
            Op::Forget => {
                for (ino, n) in self.lookups.drain() {
                    self.fs.forget(ino, n);
                }
            }
            Op::Remount => {
                let report = self.fs.shutdown(Duration::from_secs(1)).await;
                assert!(report.is_clean(), "unclean end of mount: {report:?}");
                let config = self.fs.config().clone();
                self.fs = S3Filesystem::new(self.store.clone(), config);
                self.lookups.clear();
            }
        }
        Ok(Answer::Done)
    }

    /// Whether the store holds exactly the model's bucket, with nothing left open.
    fn check_store(&self, model: &Model) -> Result<(), String> {
        let keys: Vec<String> = model.keys.keys().cloned().collect();
        if self.store.keys() != keys {
            return Err(format!("bucket {:?}, model {keys:?}", self.store.keys()));
        }
        for (key, data) in &model.keys {
            if self.store.get(key).as_deref() != Some(data.as_slice()) {
                return Err(format!("the bytes of {key:?} differ from the model's"));
            }
        }
        if self.store.open_uploads() != 0 || self.fs.open_handles() != 0 {
            return Err("an upload or a handle was left open".into());
        }
        Ok(())
    }
}

/// Runs `ops` over a bucket of `initial` keys on both sides; the first difference is the
/// error, with the trace of every step up to it.
/// `unordered`: a directory bucket's listings, shuffled by this seed. `remembered`: stats,
/// names and listing pages trusted for an hour (valid only without remote changes).
async fn run_case(
    initial: &[(String, Data)],
    ops: &[Op<Target>],
    unordered: Option<u64>,
    remembered: bool,
) -> Result<(), String> {
    let mut model = Model::default();
    let store = Arc::new(unordered.map_or_else(InMemoryStore::new, InMemoryStore::unordered));
    for (key, data) in initial {
        store.put(key, data.bytes());
        model.keys.insert(key.clone(), data.bytes());
    }
    let config = FsConfig {
        ordered_listings: unordered.is_none(),
        metadata_ttl: match remembered {
            true => Duration::from_secs(3600),
            false => config().metadata_ttl,
        },
        ..config()
    };
    let fs = S3Filesystem::new(store.clone(), config);
    let lookups = HashMap::new();
    let mut harness = Harness { store, fs, lookups };
    let mut trace = Vec::new();
    for op in ops {
        let op = op.resolve(&model);
        let mut after = model.clone();
        let expected = after.apply(&op);
        model = after;
        let got = harness.apply(&op).await;
        trace.push(format!("{op:?} -> {got:?}"));
        let verdict = if got == expected {
            harness.check_store(&model)
        } else {
            Err(format!("expected {expected:?}"))
        };
        if let Err(why) = verdict {
            let steps = trace.join("\n  ");
            return Err(format!(
                "{why}\nbucket at start: {initial:?}\nsteps:\n  {steps}"
            ));
        }
    }
    Ok(())
}

/// A path of 1 to 3 components.
fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(select(NAMES.to_vec()), 1..=3).prop_map(|c| c.join("/"))
}

/// A path, or (more often) a name that exists when the step runs.
fn target() -> impl Strategy<Value = Target> {
    let child = prop::option::weighted(0.3, select(NAMES.to_vec()));
    prop_oneof![
        1 => path().prop_map(Target::Path),
        2 => (any::<Index>(), child).prop_map(|(pick, child)| Target::Known(pick, child)),
    ]
}

/// Contents: often tiny, up to 3000 bytes.
fn data() -> impl Strategy<Value = Data> {
    let len = prop_oneof![Just(0usize), 1..8usize, 0..3000usize];
    (len, any::<u8>()).prop_map(|(len, seed)| Data { len, seed })
}

/// Contents, or none for a `dir/` marker.
fn object() -> impl Strategy<Value = Option<Data>> {
    prop::option::weighted(0.85, data())
}

/// A key of the bucket at start: an object, or a `dir/` marker (empty).
fn initial_key((path, data): (String, Option<Data>)) -> (String, Data) {
    match data {
        Some(data) => (path, data),
        None => (format!("{path}/"), Data { len: 0, seed: 0 }),
    }
}

/// One step, weighted towards those that change or reveal the namespace; with `remote`,
/// another client's puts and deletes too.
fn op(remote: bool) -> impl Strategy<Value = Op<Target>> {
    let offset = prop_oneof![Just(0u64), 0..64u64, 0..3500u64];
    let reads = prop::collection::vec((offset, prop_oneof![1..64u32, 0..4000u32]), 1..=3);
    prop_oneof![
        3 => target().prop_map(Op::Lookup),
        3 => target().prop_map(Op::ListDir),
        3 => (target(), reads).prop_map(|(t, r)| Op::Read(t, r)),
        3 => (target(), data(), 1..2000usize).prop_map(|(t, d, c)| Op::Write(t, d, c)),
        2 => target().prop_map(Op::Unlink),
        2 => target().prop_map(Op::Mkdir),
        2 => target().prop_map(Op::Rmdir),
        2 => (target(), target()).prop_map(|(a, b)| Op::Rename(a, b)),
        2 => (target(), object()).prop_map(|(t, d)| Op::RemotePut(t, d)),
        2 => target().prop_map(Op::RemoteDelete),
        1 => Just(Op::Forget),
        1 => Just(Op::Remount),
    ]
    .prop_filter("another client's changes", move |op| {
        remote || !matches!(op, Op::RemotePut(..) | Op::RemoteDelete(..))
    })
}

/// Which filesystem runs against the model.
#[derive(Debug, Clone, Copy, Default)]
struct Variant {
    /// A directory bucket: listings come in no order.
    directory: bool,
    /// Metadata and listing pages remembered for an hour; only this mount changes the
    /// bucket (its own changes must show at once all the same).
    remembered: bool,
}

/// Runs `cases` random cases from `seed`, with up to `max_ops` steps each, over the
/// filesystem `variant` says.
fn check_model(cases: u32, seed: u64, max_ops: usize, variant: Variant) {
    let config = Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    };
    let strategy = (
        prop::collection::vec((path(), object()).prop_map(initial_key), 0..=8),
        prop::collection::vec(op(!variant.remembered), 1..=max_ops),
    );
    let result = TestRunner::new(config).run(&strategy, |(initial, ops)| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        let runtime = runtime.expect("a runtime");
        runtime
            .block_on(run_case(
                &initial,
                &ops,
                variant.directory.then_some(seed),
                variant.remembered,
            ))
            .map_err(TestCaseError::fail)
    });
    if let Err(e) = result {
        panic!("the filesystem differs from the model (seed {seed}): {e}");
    }
}

#[test]
fn model_matches_filesystem() {
    check_model(256, CI_SEED, 20, Variant::default());
}

/// The same model with stats, names and listing pages remembered for an hour and only this
/// mount changing the bucket: every change of ours shows in the next listing and lookup.
#[test]
fn model_matches_filesystem_with_remembered_listings() {
    let variant = Variant {
        remembered: true,
        ..Variant::default()
    };
    check_model(256, CI_SEED + 3, 20, variant);
}

/// The same model over a directory bucket, whose listings come in no order.
#[test]
fn model_matches_filesystem_on_a_directory_bucket() {
    let variant = Variant {
        directory: true,
        ..Variant::default()
    };
    check_model(128, CI_SEED + 2, 20, variant);
}

/// The long run, for manual use: `MOUNT_S3_MODEL_CASES` cases (default 256) from
/// `MOUNT_S3_MODEL_SEED` (default: a fixed seed other than the CI run's), up to 40 steps,
/// without and with remembered listings.
#[test]
fn model_long_run() {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let cases = env("MOUNT_S3_MODEL_CASES").unwrap_or(256);
    let seed = env("MOUNT_S3_MODEL_SEED").unwrap_or(CI_SEED + 1);
    for remembered in [false, true] {
        let variant = Variant {
            remembered,
            ..Variant::default()
        };
        check_model(u32::try_from(cases).unwrap_or(u32::MAX), seed, 40, variant);
    }
}
