//! The blocking facade used by the C, PHP and Python layers: one shared multi-threaded tokio
//! runtime for the whole process, re-created in a child process after `fork()`.
//!
//! PHP-FPM and Python's multiprocessing fork worker processes from a parent that may already
//! have used the library. A tokio runtime's worker threads do not survive `fork()`, so the
//! child must not touch the parent's runtime: [`runtime`] notices the fork (the fork
//! generation, bumped by a `pthread_atfork` child handler) and builds a fresh runtime for the
//! child. The parent's runtime object is leaked in the child on purpose: dropping it would try
//! to join threads that do not exist there.
//!
//! Why no lock the child needs can be held at the fork: every poll of a future driven by
//! [`block_on`], every poll of a library task and every library lock runs inside a section of
//! the fork gate, and the `pthread_atfork` prepare handler waits until no section is open
//! before the process forks (sections never wait for anything outside one, so this wait
//! always ends; the order is documented in `core/src/fork.rs`). The runtime slot itself is
//! such a lock. After the fork, the child's first call into the library starts every
//! background task again (health checks, watchers, heartbeats, subscribers).

use std::future::Future;
use std::sync::Arc;

use tokio::runtime::{Builder, Handle, Runtime};

use crate::error::{Error, Result};
use crate::fork;

static RUNTIME: fork::PerProcess<Arc<Runtime>> = fork::PerProcess::new();

/// How many times this process is a forked child of a process that loaded clusterkit (0 in
/// the original process). Handles that own tasks on the runtime (Redis connections) compare
/// it to rebuild themselves in a child.
pub(crate) fn fork_generation() -> u64 {
    fork::register_hooks();
    fork::generation()
}

/// The fork generation without registering the fork handler: a cheap check for hot paths.
/// Until the runtime was first built nothing ran in the background, so the handler not being
/// registered yet loses nothing.
#[inline]
pub(crate) fn current_generation() -> u64 {
    fork::generation()
}

/// Number of worker threads of the shared runtime: 2, or the value of the environment
/// variable `CLUSTERKIT_THREADS` (1..=64) read when the runtime is first built.
fn worker_threads() -> usize {
    std::env::var("CLUSTERKIT_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| (1..=64).contains(n))
        .unwrap_or(2)
}

/// The process's shared runtime, built on first use and rebuilt once in a forked child (where
/// the first call also starts the library's background tasks again).
///
/// Fails with [`Error::Internal`] if the OS refuses to create the runtime's threads.
pub fn runtime() -> Result<Arc<Runtime>> {
    fork::register_hooks();
    let rt = RUNTIME.get_or_try_init(|| {
        let rt = Builder::new_multi_thread()
            .worker_threads(worker_threads())
            .thread_name("clusterkit")
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the clusterkit runtime: {e}")))?;
        Ok(Arc::new(rt))
    })?;
    fork::check();
    Ok(rt)
}

thread_local! {
    /// Set while [`block_on`] polls a future on the caller's own thread (see
    /// [`inline_io_allowed`]).
    static INLINE_POLL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True while a blocking caller's thread polls the future itself, the first poll of
/// [`block_on`]: the caller is blocked anyway, so a backend may do its I/O synchronously on
/// this thread (like phpredis does) instead of handing it to the runtime's threads and
/// waiting to be woken — two thread hand-offs less per round trip. Never true on a runtime
/// thread or inside an async caller's task.
pub(crate) fn inline_io_allowed() -> bool {
    INLINE_POLL.try_with(|c| c.get()).unwrap_or(false)
}

/// `fut` polled with inline I/O turned off: for requests fanned out to several servers at once
/// (writes to every replica, batches per node), which must stay concurrent rather than run
/// one after the other on the caller's thread.
pub(crate) fn not_inline<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    let mut fut = Box::pin(fut);
    std::future::poll_fn(move |cx| {
        let was = INLINE_POLL.try_with(|c| c.replace(false)).unwrap_or(false);
        let r = fut.as_mut().poll(cx);
        let _ = INLINE_POLL.try_with(|c| c.set(was));
        r
    })
}

/// Resets [`INLINE_POLL`] also when the poll panics.
struct InlinePoll;

impl InlinePoll {
    fn start() -> InlinePoll {
        let _ = INLINE_POLL.try_with(|c| c.set(true));
        InlinePoll
    }
}

impl Drop for InlinePoll {
    fn drop(&mut self) {
        let _ = INLINE_POLL.try_with(|c| c.set(false));
    }
}

thread_local! {
    /// This thread's copy of the runtime handle, tagged with the fork generation it belongs
    /// to, so a blocking call does not take the global lock.
    static LOCAL_RUNTIME: std::cell::RefCell<Option<(u64, Arc<Runtime>)>> =
        const { std::cell::RefCell::new(None) };
}

fn local_runtime() -> Result<Arc<Runtime>> {
    let generation = fork::generation();
    let cached = LOCAL_RUNTIME
        .try_with(|slot| match &*slot.borrow() {
            Some((g, rt)) if *g == generation => Some(rt.clone()),
            _ => None,
        })
        .ok()
        .flatten();
    if let Some(rt) = cached {
        return Ok(rt);
    }
    let rt = runtime()?;
    let _ = LOCAL_RUNTIME.try_with(|slot| {
        let previous = slot.borrow_mut().replace((generation, rt.clone()));
        if let Some((g, stale)) = previous {
            if g != generation {
                // Inherited across fork(): never drop a runtime whose threads are gone.
                std::mem::forget(stale);
            }
        }
    });
    Ok(rt)
}

/// Runs `fut` to completion on the shared runtime, blocking the calling thread.
///
/// The future is first polled once on the calling thread (inside the runtime's context): work
/// that completes without waiting, such as every operation of the embedded backends and the
/// single-Redis backend's synchronous path (its I/O done on the calling thread), returns without a thread
/// switch. Only a future that has to wait is driven by the runtime.
///
/// Fails with [`Error::InvalidArgument`] when called from inside an async runtime (blocking
/// there would stall it; use the async API instead), or as [`runtime`] does.
pub fn block_on<F: Future>(fut: F) -> Result<F::Output> {
    if Handle::try_current().is_ok() {
        return Err(Error::invalid(
            "context",
            "a blocking clusterkit call was made from inside an async runtime; use the async API",
        ));
    }
    let rt = local_runtime()?;
    fork::check();
    let mut fut = std::pin::pin!(fut);
    {
        let _context = rt.enter();
        let _section = fork::section();
        let _inline = InlinePoll::start();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Ok(v);
        }
    }
    // Every poll inside a section of the fork gate (see the module docs); the waits between
    // polls are outside. Waiting here inside a section could hold up a fork until its drain
    // limit (the runtime's polls wait at the gate while a fork is pending).
    debug_assert_eq!(
        fork::depth(),
        0,
        "block_on waits for the runtime inside a fork-gate section"
    );
    Ok(rt.block_on(std::future::poll_fn(|cx| {
        let _section = fork::section();
        fut.as_mut().poll(cx)
    })))
}

/// Spawns `fut` on the shared runtime, every poll inside a section of the fork gate (like the
/// library's own tasks), for bindings that complete their callers' awaitables (Python's
/// asyncio) from the runtime. The future must not block.
///
/// Fails as [`runtime`] does.
pub fn spawn<F>(fut: F) -> Result<tokio::task::JoinHandle<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fork::spawn(fut)
}

/// Polls `fut` once on the calling thread, inside the shared runtime's context and a section
/// of the fork gate, with a waker that does nothing: `Ok(Ok(output))` when it completed
/// without waiting (every operation of the embedded backends), `Ok(Err(fut))` when it has to
/// wait: hand it to [`spawn`], which polls it again. Unlike [`block_on`]'s first poll, a
/// backend never does blocking I/O here (the caller may be an event loop's thread). For async
/// bindings that complete an awaitable at once when they can.
///
/// Fails as [`runtime`] does.
pub fn poll_once<F: Future + Unpin>(mut fut: F) -> Result<std::result::Result<F::Output, F>> {
    let rt = local_runtime()?;
    fork::check();
    let _context = rt.enter();
    let _section = fork::section();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::Pin::new(&mut fut).poll(&mut cx) {
        std::task::Poll::Ready(v) => Ok(Ok(v)),
        std::task::Poll::Pending => Ok(Err(fut)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_runs_futures() {
        let v = block_on(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            7
        })
        .unwrap();
        assert_eq!(v, 7);
        assert!(Arc::ptr_eq(&runtime().unwrap(), &runtime().unwrap()));
    }

    #[test]
    fn block_on_inside_a_runtime_is_an_error_not_a_panic() {
        let rt = Builder::new_current_thread().build().unwrap();
        let e = rt.block_on(async { block_on(async { 1 }) }).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
    }
}
