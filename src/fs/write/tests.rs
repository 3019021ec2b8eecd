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
        ..WriteOptions::default()
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

#[tokio::test]
async fn many_writers_stay_within_the_budget_and_all_land() {
    let store = Arc::new(InMemoryStore::new());
    // Room for three parts: 16 writers of three parts each must take turns.
    let budget = MemoryBudget::new(3 * PART);
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let (store, budget) = (store.clone(), budget.clone());
            tokio::spawn(async move {
                let w = writer_with(&store, &format!("f{i}"), budget);
                w.reserve_first().await.unwrap();
                let data = pattern((3 * PART + i) as usize);
                write_in_chunks(&w, &data, 256 * 1024).await;
                w.commit().await.unwrap();
                data
            })
        })
        .collect();
    for (i, w) in writers.into_iter().enumerate() {
        let data = w.await.unwrap();
        assert_eq!(store.get(&format!("f{i}")).unwrap().as_ref(), &data[..]);
    }
    assert!(
        budget.peak() <= 3 * PART,
        "peak {} over the limit",
        budget.peak()
    );
    assert_eq!(budget.used(), 0);
    assert_eq!(store.open_uploads(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_budget_held_by_idle_writers_is_enomem_not_a_hang() {
    let store = Arc::new(InMemoryStore::new());
    let budget = MemoryBudget::new(2 * PART);
    let a = writer_with(&store, "a", budget.clone());
    a.reserve_first().await.unwrap();
    let b = writer_with(&store, "b", budget.clone());
    b.reserve_first().await.unwrap();
    // A third writer cannot start while the other two hold everything and do not write.
    let c = writer_with(&store, "c", budget.clone());
    assert_eq!(c.reserve_first().await.unwrap_err().errno(), libc::ENOMEM);
    // Writers that write go on: their sent parts give the budget back.
    write_in_chunks(&a, &pattern((3 * PART) as usize), MIB as usize).await;
    a.commit().await.unwrap();
    b.write(0, b"small").await.unwrap();
    b.commit().await.unwrap();
    let c = writer_with(&store, "c", budget.clone());
    c.reserve_first().await.unwrap();
    c.write(0, b"c").await.unwrap();
    c.commit().await.unwrap();
    assert_eq!(budget.used(), 0);
}

#[tokio::test]
async fn a_budget_smaller_than_a_part_refuses_every_writer_at_once() {
    let store = Arc::new(InMemoryStore::new());
    let w = writer_with(&store, "obj", MemoryBudget::new(1024));
    let started = std::time::Instant::now();
    assert_eq!(w.reserve_first().await.unwrap_err().errno(), libc::ENOMEM);
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

use proptest::strategy::Strategy;

proptest::proptest! {
    #![proptest_config(crate::testing::fuzz_config())]
    /// Write offsets come from the kernel: any of them is accepted when it is the current end
    /// and refused (the upload aborted) otherwise, and what lands is exactly what was written
    /// in order, or nothing.
    #[test]
    fn untrusted_write_offsets_land_in_order_or_not_at_all(
        writes in proptest::collection::vec(
            (proptest::prop_oneof![3 => proptest::strategy::Just(None), 1 => proptest::prelude::any::<u64>().prop_map(Some)],
             0usize..300_000),
            1..10),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let store = Arc::new(InMemoryStore::new());
            let w = writer(&store, "obj");
            let mut written = Vec::new();
            let mut failed = false;
            for (at, len) in writes {
                let offset = at.unwrap_or(written.len() as u64);
                let data = pattern(len);
                match w.write(offset, &data).await {
                    Ok(size) => {
                        assert!(!failed && offset == written.len() as u64);
                        written.extend_from_slice(&data);
                        assert_eq!(size, written.len() as u64);
                    }
                    Err(e) => {
                        assert!(failed || offset != written.len() as u64, "{e}");
                        failed = true;
                    }
                }
            }
            match w.commit().await {
                Ok(done) => {
                    assert!(!failed);
                    assert_eq!(done.size, written.len() as u64);
                    assert_eq!(store.get("obj").unwrap().as_ref(), &written[..]);
                }
                Err(_) => {
                    assert!(failed);
                    assert!(store.get("obj").is_none());
                }
            }
            assert_eq!(store.open_uploads(), 0);
        });
    }
}
