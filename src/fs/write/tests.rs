//! Uploader behaviour on the in-memory store: whole objects or nothing, and no parts left.

use std::sync::Arc;

use super::*;
use crate::s3::in_memory::InMemoryStore;

const MIB: u64 = 1024 * 1024;
const PART: u64 = 5 * MIB;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

fn writer(store: &Arc<InMemoryStore>, key: &str) -> FileWriter<InMemoryStore> {
    writer_with(store, key, MemoryBudget::new(64 * MIB))
}

fn writer_with(
    store: &Arc<InMemoryStore>,
    key: &str,
    budget: Arc<MemoryBudget>,
) -> FileWriter<InMemoryStore> {
    let options = WriteOptions {
        write_id: new_write_id(),
        if_none_match: false,
    };
    let aborts = PendingAborts::new(store.clone());
    FileWriter::new(store.clone(), key.into(), PART, budget, options, aborts)
}

async fn write_in_chunks(w: &FileWriter<InMemoryStore>, data: &[u8], chunk: usize) {
    let mut offset = 0;
    for piece in data.chunks(chunk) {
        w.write(offset, piece).await.unwrap();
        offset += piece.len() as u64;
    }
}

#[tokio::test]
async fn sizes_around_the_part_size_land_whole_at_commit() {
    for size in [0, 1, PART - 1, PART, PART + 1, 3 * PART + 7] {
        let store = Arc::new(InMemoryStore::new());
        let data = pattern(size as usize);
        let w = writer(&store, "obj");
        write_in_chunks(&w, &data, 128 * 1024).await;
        assert!(
            store.get("obj").is_none(),
            "size {size}: visible before commit"
        );
        let done = w.commit().await.unwrap();
        assert_eq!(done.size, size);
        assert_eq!(store.get("obj").unwrap().as_ref(), &data[..], "size {size}");
        assert_eq!(store.open_uploads(), 0);
        // Committing again is harmless; writing again is refused.
        assert_eq!(w.commit().await.unwrap(), done);
        assert_eq!(w.write(size, b"x").await.unwrap_err().errno(), libc::EINVAL);
    }
}

#[tokio::test]
async fn out_of_order_write_aborts_and_leaves_the_old_object() {
    let store = Arc::new(InMemoryStore::new());
    store.put("obj", b"old".to_vec());
    let w = writer(&store, "obj");
    let data = pattern((2 * PART) as usize);
    write_in_chunks(&w, &data, MIB as usize).await;
    assert_eq!(store.open_uploads(), 1, "parts were streaming");
    let err = w.write(5, b"back").await.unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
    assert_eq!(store.open_uploads(), 0, "aborted");
    assert_eq!(w.commit().await.unwrap_err().errno(), libc::EINVAL);
    assert_eq!(store.get("obj").unwrap().as_ref(), b"old");
}

#[tokio::test]
async fn abort_leaves_nothing() {
    let store = Arc::new(InMemoryStore::new());
    let w = writer(&store, "obj");
    write_in_chunks(&w, &pattern((3 * PART) as usize), MIB as usize).await;
    w.abort(libc::EIO).await;
    assert_eq!(store.open_uploads(), 0);
    assert!(store.get("obj").is_none());
    assert_eq!(w.commit().await.unwrap_err().errno(), libc::EIO);
}

#[tokio::test]
async fn budget_is_returned_after_commit() {
    let store = Arc::new(InMemoryStore::new());
    let budget = MemoryBudget::new(64 * MIB);
    let w = writer_with(&store, "obj", budget.clone());
    write_in_chunks(&w, &pattern((4 * PART + 3) as usize), MIB as usize).await;
    assert!(budget.used() > 0);
    w.commit().await.unwrap();
    assert_eq!(budget.used(), 0);
    assert!(budget.peak() <= (MAX_PARTS_IN_FLIGHT as u64 + 1) * PART);
}
