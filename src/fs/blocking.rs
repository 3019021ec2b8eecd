//! Blocking work (local file I/O) from async code, without a thread hop where one is not
//! needed.
//!
//! The FUSE adapter first polls each request's future on the dispatch thread that read the
//! request, inside [`inline`]; only a future that has to wait is handed to the runtime. While
//! that first poll runs, [`unblock`] runs its closure right there: the dispatch thread may
//! block on the local disk, and a cached 4 KiB read then costs no wake-up of a worker or a
//! blocking-pool thread (on a small VM each wake-up costs tens of microseconds, more than
//! the read). Anywhere else, `unblock` is `spawn_blocking`, so runtime workers never block.

use std::cell::Cell;

thread_local! {
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with blocking work allowed inline on this thread.
pub fn inline<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            INLINE.set(self.0);
        }
    }
    let _reset = Reset(INLINE.replace(true));
    f()
}

/// The result of the blocking `f`: computed in place inside [`inline`], on the blocking
/// pool otherwise. The error is a panic or cancellation of the pooled task.
pub async fn unblock<T, F>(f: F) -> Result<T, tokio::task::JoinError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if INLINE.get() {
        Ok(f())
    } else {
        tokio::task::spawn_blocking(f).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    #[tokio::test]
    async fn inline_only_inside_the_scope() {
        let here = std::thread::current().id();
        let outside = unblock(move || std::thread::current().id() == here)
            .await
            .unwrap();
        assert!(!outside, "outside the scope the pool runs it");
        let fut = unblock(move || std::thread::current().id() == here);
        let mut fut = std::pin::pin!(fut);
        let waker = std::task::Waker::noop();
        let polled = inline(|| {
            fut.as_mut()
                .poll(&mut std::task::Context::from_waker(waker))
        });
        assert!(matches!(polled, std::task::Poll::Ready(Ok(true))));
        assert!(!INLINE.get(), "the flag is reset");
    }
}
