//! A store that answers a GET with fewer bytes than the range asked for (a broken proxy, a
//! buggy server) never makes a read come back short in the middle of an object: the kernel
//! would take a short read for the end of the file. Such a read is EIO, and the next read
//! of the same bytes asks again and gets them right.

use super::*;
use crate::s3::faulty::{Fault, FaultyStore, Op};

const MIB: usize = 1024 * 1024;

#[tokio::test]
async fn a_short_get_body_is_an_error_never_a_short_read() {
    let data: Vec<u8> = (0..20 * MIB).map(|i| (i * 31 % 253) as u8).collect();
    // Every GET of the sequential stream after the first comes back short once.
    for nth in 2..=4 {
        let store = Arc::new(FaultyStore::new(InMemoryStore::new()));
        store.inner().put("big", data.clone());
        store.inject(Op::Get, nth, Fault::ShortBody(1000));
        let fs = S3Filesystem::new(store.clone(), FsConfig::default());
        let ino = fs.lookup(ROOT_INO, "big").await.unwrap().ino;
        let fh = fs.open(ino, OpenMode::default(), me()).await.unwrap();
        let (mut errors, mut at) = (0, 0);
        while at < data.len() {
            let want = MIB.min(data.len() - at);
            match fs.read(fh, at as u64, want as u32).await {
                Ok(bytes) => {
                    assert_eq!(
                        bytes.len(),
                        want,
                        "GET {nth} short: read at {at} came back short"
                    );
                    assert!(
                        bytes[..] == data[at..at + want],
                        "GET {nth} short: wrong bytes at {at}"
                    );
                    at += want;
                }
                Err(e) => {
                    assert_eq!(e.errno(), libc::EIO, "{e}");
                    errors += 1;
                    assert!(errors < 3, "the read at {at} failed again after the retry");
                }
            }
        }
        assert_eq!(
            errors, 1,
            "GET {nth} short: exactly the read that met it failed"
        );
        fs.release(fh).await;
    }
}

/// The same for a read that is fetched for itself (a first read far into the object, not a
/// stream's prefetch): a short body is an error, never a short read.
#[tokio::test]
async fn a_short_body_of_a_read_fetched_for_itself_is_an_error() {
    let data: Vec<u8> = (0..20 * MIB).map(|i| (i * 31 % 253) as u8).collect();
    let store = Arc::new(FaultyStore::new(InMemoryStore::new()));
    store.inner().put("big", data.clone());
    store.inject(Op::Get, 1, Fault::ShortBody(1000));
    let fs = S3Filesystem::new(store.clone(), FsConfig::default());
    let ino = fs.lookup(ROOT_INO, "big").await.unwrap().ino;
    let fh = fs.open(ino, OpenMode::default(), me()).await.unwrap();
    let at = 15 * MIB;
    match fs.read(fh, at as u64, 65536).await {
        Ok(bytes) => assert!(bytes[..] == data[at..at + 65536], "a short or wrong read"),
        Err(e) => assert_eq!(e.errno(), libc::EIO, "{e}"),
    }
    assert!(store.calls(Op::Get) >= 1, "the short body was met");
    let again = fs.read(fh, at as u64, 65536).await.unwrap();
    assert!(
        again[..] == data[at..at + 65536],
        "the retry reads it whole"
    );
    fs.release(fh).await;
}
