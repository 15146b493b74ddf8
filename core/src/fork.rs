//! Fork safety in one place: the fork gate, per-process values and background tasks that are
//! started again in a forked child.
//!
//! PHP-FPM, gunicorn and Python's multiprocessing fork worker processes from a parent that
//! may already use clusterkit. `fork()` copies the memory of the whole process but only the
//! calling thread, which raises three problems, each solved here once for the whole library:
//!
//! 1. **A lock held by another thread at the moment of fork stays locked in the child** (its
//!    owner does not exist there), so the child's first use of it deadlocks. This is solved
//!    by the *fork gate* (see below): no library lock is held by any thread when the process
//!    forks.
//! 2. **Tasks and connections of the parent's runtime are dead in the child**: the runtime's
//!    worker threads, and so the driver tasks of every connection, were not copied. A value
//!    tied to the runtime lives in a `PerProcess` slot, tagged with the fork generation it
//!    was built in; a child builds its own and *leaks* the parent's (dropping it could wait for
//!    threads or take locks that belong to the parent's runtime).
//! 3. **Background tasks stop** (health checks, the cache's dirty-node watcher, Redlock
//!    release subscribers, discovery watchers and heartbeats). Each is a `Background` task,
//!    which registers itself in one restart registry; the first use of the library in a child
//!    (`check`, called by picks, [`crate::blocking::block_on`] and
//!    [`crate::blocking::runtime`]) starts every registered task again on the child's runtime.
//!    Owners that need more than "spawn the same future again" implement `RestartInChild`.
//!
//! # The fork gate
//!
//! Every piece of library code that takes a lock another thread could hold runs inside a
//! *section* (`section`): every poll of a library task (`spawn`, `gated`), every poll
//! of a future driven by [`crate::blocking::block_on`], every `Mutex` of this module
//! (taken only inside a section: a cluster's write lock, the runtime slot, the cache's
//! connection map and dirty set, a registration's state, the shared deployment registry),
//! the synchronous membership changes and event subscriptions of a cluster, and the embedded
//! cache's read shortcut. Locks that are held *across* an `.await` (the registry link's
//! connection lock, the Redis Cluster connection cell, a blocking event reader's receiver)
//! cannot be covered by a section; they live in `PerProcess` slots instead, so a child
//! never uses the parent's copy. Sections
//! are counted in one atomic word. A `pthread_atfork` *prepare* handler marks a fork as
//! pending and waits until no section is open (other than the forking thread's own); threads
//! that try to open a section meanwhile wait until the fork is done. The *parent* handler
//! clears the mark; the *child* handler (async-signal-safe: two atomic stores and a read of a
//! `const` thread-local) bumps the fork generation and resets the gate for the one thread that
//! exists in the child. So at the instant of `fork()` no library lock (std, or tokio's internal
//! ones in a broadcast channel, a `Notify` or a `OnceCell`, touched only inside polls) is held
//! by another thread.
//!
//! Ordering rules that keep this free of deadlock (the prepare handler waits for sections and
//! for nothing else):
//! - a section never waits for anything a thread *outside* a section provides: sections only
//!   take locks that are themselves taken inside sections, do bounded I/O (the blocking
//!   facade's inline Redis round trip, bounded by its timeouts) and never block on a channel;
//! - in particular a section never waits for a runtime task (whose polls may be held at the
//!   gate): never call `block_on` inside one (checked by a debug assertion);
//! - sections nest (a per-thread depth), so code already inside one never waits at the gate;
//! - a thread that forks while inside a section (its own depth is not zero) does not wait for
//!   itself: it is the one thread of the child, and releases its own locks there;
//! - the prepare handler gives up waiting after [`DRAIN_LIMIT`] (a section stuck in I/O far
//!   beyond every timeout) rather than hang the parent; this is counted in
//!   [`forks_without_drain`].
//!
//! What is not covered: async callers that poll library futures on their own runtime are not
//! inside a section unless they go through the blocking facade; such a program must not fork
//! while its runtime runs (its runtime is dead in the child anyway).

use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once, Weak};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::error::Result;

/// How many times this process is a forked child of a process that loaded clusterkit.
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// The generation whose background tasks were (or are being) started again.
static RESTARTED: AtomicU64 = AtomicU64::new(0);
/// Low 32 bits: sections open; high 32 bits: forks pending (prepare ran, parent not yet).
static GATE: AtomicU64 = AtomicU64::new(0);
const FORK_PENDING: u64 = 1 << 32;
const SECTIONS: u64 = FORK_PENDING - 1;
static HOOKS: Once = Once::new();
/// Forks that went ahead although a section stayed open for [`DRAIN_LIMIT`].
static UNDRAINED: AtomicU64 = AtomicU64::new(0);
/// Forks whose prepare handler found a section open and waited for it to close.
static WAITED: AtomicU64 = AtomicU64::new(0);

/// The longest a fork waits for open sections to close.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);

thread_local! {
    /// Sections this thread has open (they nest).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

fn own_depth() -> u64 {
    u64::from(DEPTH.try_with(Cell::get).unwrap_or(0))
}

/// Short spin, then yield, then sleep: waits that are rare and short (a fork in progress, or
/// a few sections finishing).
fn backoff(round: u32) {
    if round < 64 {
        std::hint::spin_loop();
    } else if round < 256 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(100));
    }
}

extern "C" fn prepare() {
    GATE.fetch_add(FORK_PENDING, Ordering::SeqCst);
    let own = own_depth();
    let started = Instant::now();
    let mut round = 0u32;
    if GATE.load(Ordering::SeqCst) & SECTIONS > own {
        WAITED.fetch_add(1, Ordering::Relaxed);
    }
    while GATE.load(Ordering::SeqCst) & SECTIONS > own {
        if started.elapsed() > DRAIN_LIMIT {
            UNDRAINED.fetch_add(1, Ordering::Relaxed);
            break;
        }
        backoff(round);
        round = round.saturating_add(1);
    }
}

extern "C" fn parent() {
    GATE.fetch_sub(FORK_PENDING, Ordering::SeqCst);
}

extern "C" fn child() {
    // Async-signal-safe: atomics, and a `const` thread-local without a destructor.
    GENERATION.fetch_add(1, Ordering::SeqCst);
    // Only this thread exists here: its own sections are the only open ones, and no other
    // thread's fork is pending.
    GATE.store(own_depth(), Ordering::SeqCst);
}

/// Registers the `pthread_atfork` handlers (once per process). Called before anything runs
/// in the background (the runtime is built through [`crate::blocking::runtime`], which calls
/// this first).
pub(crate) fn register_hooks() {
    HOOKS.call_once(|| {
        // SAFETY: the handlers only touch atomics and a const thread-local (child), or spin
        // and sleep in the parent (prepare); see the module docs for the ordering.
        unsafe {
            libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
        }
    });
}

/// Sections this thread has open (0 outside any).
pub(crate) fn depth() -> u64 {
    own_depth()
}

/// The current fork generation (0 in the original process). Cheap: one relaxed load.
#[inline]
pub(crate) fn generation() -> u64 {
    GENERATION.load(Ordering::Relaxed)
}

/// Forks that did not wait for every open section (one stayed open for [`DRAIN_LIMIT`]):
/// should stay 0; a child of such a fork may find a library lock held.
pub fn forks_without_drain() -> u64 {
    UNDRAINED.load(Ordering::Relaxed)
}

/// Forks (in this process and its ancestors) whose prepare handler found a library lock or
/// poll in progress on another thread and waited for it: how often the gate mattered.
pub fn forks_that_waited() -> u64 {
    WAITED.load(Ordering::Relaxed)
}

/// An open section of the fork gate (see the module docs); closed on drop. Not `Send`: it
/// belongs to the thread that opened it and is never held across an `.await`.
pub(crate) struct Section {
    counted: bool,
    _not_send: PhantomData<*const ()>,
}

/// Opens a section: waits while a fork is pending unless this thread already has one open.
pub(crate) fn section() -> Section {
    let Ok(depth) = DEPTH.try_with(|d| {
        let v = d.get();
        d.set(v.saturating_add(1));
        v
    }) else {
        // Thread-local storage is being torn down (thread exit): nothing to count with.
        return Section {
            counted: false,
            _not_send: PhantomData,
        };
    };
    if depth > 0 {
        GATE.fetch_add(1, Ordering::SeqCst);
    } else {
        let mut round = 0u32;
        loop {
            if GATE.fetch_add(1, Ordering::SeqCst) < FORK_PENDING {
                break;
            }
            GATE.fetch_sub(1, Ordering::SeqCst);
            while GATE.load(Ordering::SeqCst) >= FORK_PENDING {
                backoff(round);
                round = round.saturating_add(1);
            }
        }
    }
    Section {
        counted: true,
        _not_send: PhantomData,
    }
}

impl Drop for Section {
    fn drop(&mut self) {
        if self.counted {
            GATE.fetch_sub(1, Ordering::SeqCst);
            let _ = DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
        }
    }
}

/// `fut` with every poll inside a [`section`].
pub(crate) fn gated<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    let mut fut = Box::pin(fut);
    std::future::poll_fn(move |cx| {
        let _section = section();
        fut.as_mut().poll(cx)
    })
}

/// Spawns a library task on the shared runtime, every poll inside a [`section`].
///
/// Fails as [`crate::blocking::runtime`] does.
pub(crate) fn spawn<F>(fut: F) -> Result<JoinHandle<F::Output>>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Ok(crate::blocking::runtime()?.spawn(gated(fut)))
}

/// A `std::sync::Mutex` taken only inside a [`section`], so it is never held by another
/// thread when the process forks. Poisoning is ignored (the data is taken over as is).
#[derive(Default)]
pub(crate) struct Mutex<T> {
    inner: std::sync::Mutex<T>,
}

/// A locked [`Mutex`]; the section closes after the lock is released.
pub(crate) struct MutexGuard<'a, T> {
    guard: std::sync::MutexGuard<'a, T>,
    _section: Section,
}

impl<T> Mutex<T> {
    pub(crate) const fn new(value: T) -> Mutex<T> {
        Mutex {
            inner: std::sync::Mutex::new(value),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        let section = section();
        MutexGuard {
            guard: self.inner.lock().unwrap_or_else(|e| e.into_inner()),
            _section: section,
        }
    }

    /// The value, without locking (`&mut self` proves no one else holds it).
    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T> std::ops::Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> std::ops::DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

/// A value that belongs to one process: built on first use, built again in a forked child.
/// The parent's value is leaked in the child, never dropped (its drop could wait for the
/// parent's runtime threads or take the parent's connection locks).
pub(crate) struct PerProcess<T> {
    slot: Mutex<Option<(u64, T)>>,
}

impl<T: Clone> PerProcess<T> {
    /// An empty slot.
    pub(crate) const fn new() -> PerProcess<T> {
        PerProcess {
            slot: Mutex::new(None),
        }
    }

    /// A slot holding `value` for the current process.
    pub(crate) fn with(value: T) -> PerProcess<T> {
        PerProcess {
            slot: Mutex::new(Some((generation(), value))),
        }
    }

    /// This process's value, built with `init` if there is none yet (or it was inherited
    /// across a fork). `init` runs under the slot's lock: keep it short (no I/O). Fails as
    /// `init` does; the slot stays empty then.
    pub(crate) fn get_or_try_init(&self, init: impl FnOnce() -> Result<T>) -> Result<T> {
        let g = generation();
        let mut slot = self.slot.lock();
        if let Some((vg, v)) = slot.as_ref() {
            if *vg == g {
                return Ok(v.clone());
            }
        }
        if let Some(stale) = slot.take() {
            std::mem::forget(stale);
        }
        let v = init()?;
        *slot = Some((g, v.clone()));
        Ok(v)
    }

    /// Changes this process's value in place (nothing happens if there is none).
    pub(crate) fn update(&self, f: impl FnOnce(&mut T)) {
        let g = generation();
        let mut slot = self.slot.lock();
        if let Some((vg, v)) = slot.as_mut() {
            if *vg == g {
                f(v);
            }
        }
    }
}

impl<T> Drop for PerProcess<T> {
    fn drop(&mut self) {
        let g = generation();
        if let Some((vg, v)) = self.slot.get_mut().take() {
            if vg != g {
                std::mem::forget(v);
            }
        }
    }
}

/// Something that has work to redo in a forked child (start tasks again), registered with
/// [`register`] and run by [`check`] on the child's first use of the library.
pub(crate) trait RestartInChild: Send + Sync + 'static {
    /// Called once per child generation, on the child's runtime context, outside any lock of
    /// the registry.
    fn restart_in_child(&self);
}

static REGISTRY: Mutex<Vec<Weak<dyn RestartInChild>>> = Mutex::new(Vec::new());

/// Registers `owner` to be restarted in every forked child while it is alive.
pub(crate) fn register(owner: Weak<dyn RestartInChild>) {
    let mut r = REGISTRY.lock();
    r.retain(|w| w.strong_count() > 0);
    r.push(owner);
}

/// In a forked child, on first call: restarts everything registered. One relaxed load and a
/// compare otherwise (picks call it).
#[inline]
pub(crate) fn check() {
    if GENERATION.load(Ordering::Relaxed) != RESTARTED.load(Ordering::Relaxed) {
        restart_all();
    }
}

#[cold]
fn restart_all() {
    let g = GENERATION.load(Ordering::SeqCst);
    if RESTARTED.swap(g, Ordering::SeqCst) == g {
        return;
    }
    let live: Vec<Arc<dyn RestartInChild>> = {
        let mut r = REGISTRY.lock();
        r.retain(|w| w.strong_count() > 0);
        r.iter().filter_map(Weak::upgrade).collect()
    };
    for owner in live {
        owner.restart_in_child();
    }
}

type MakeTask = Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A background task that runs in whichever process holds it: spawned on the shared runtime
/// (every poll inside a [`section`]), spawned again from the same recipe in a forked child
/// (unless it had finished or was stopped), aborted when the last handle is dropped. The one
/// mechanism for the health supervisor, the cache's dirty-node watcher, Redlock release
/// subscribers and discovery watchers and heartbeats.
pub(crate) struct Background {
    make: MakeTask,
    /// The generation that spawned the task, and its handle (`None`: stopped).
    task: Mutex<(u64, Option<JoinHandle<()>>)>,
}

impl Background {
    /// Spawns `make()` now and again in every forked child.
    ///
    /// Fails as [`crate::blocking::runtime`] does.
    pub(crate) fn start<F, M>(make: M) -> Result<Arc<Background>>
    where
        M: Fn() -> F + Send + Sync + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let bg = Arc::new(Background {
            make: Box::new(move || Box::pin(make())),
            task: Mutex::new((generation(), None)),
        });
        bg.spawn()?;
        let weak: Weak<Background> = Arc::downgrade(&bg);
        register(weak);
        Ok(bg)
    }

    fn spawn(&self) -> Result<()> {
        let g = generation();
        let h = spawn((self.make)())?;
        let mut t = self.task.lock();
        let old = std::mem::replace(&mut *t, (g, Some(h)));
        drop(t);
        release(old, g);
        Ok(())
    }

    /// True while the task runs in this process.
    pub(crate) fn is_running(&self) -> bool {
        let t = self.task.lock();
        t.0 == generation() && t.1.as_ref().is_some_and(|h| !h.is_finished())
    }

    /// Stops the task (also in future children). Returns its handle if it belongs to this
    /// process, to await its end.
    pub(crate) fn stop(&self) -> Option<JoinHandle<()>> {
        let g = generation();
        let mut t = self.task.lock();
        let (tg, h) = std::mem::replace(&mut *t, (g, None));
        drop(t);
        let h = h?;
        if tg == g {
            h.abort();
            Some(h)
        } else {
            std::mem::forget(h);
            None
        }
    }
}

/// Aborts a task of this process; leaks one inherited from the parent (its runtime is not
/// ours to touch).
fn release((tg, h): (u64, Option<JoinHandle<()>>), g: u64) {
    if let Some(h) = h {
        if tg == g {
            h.abort();
        } else {
            std::mem::forget(h);
        }
    }
}

impl RestartInChild for Background {
    fn restart_in_child(&self) {
        let g = generation();
        let wanted = {
            let t = self.task.lock();
            // Reading a stale handle's state is a plain atomic load of copied memory.
            t.0 != g && t.1.as_ref().is_some_and(|h| !h.is_finished())
        };
        if wanted {
            let _ = self.spawn();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let g = generation();
        let t = std::mem::replace(self.task.get_mut(), (g, None));
        release(t, g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_nest_and_close() {
        {
            let _a = section();
            let _b = section();
            assert_eq!(own_depth(), 2);
            // Other tests' threads may hold sections too, never fewer than ours.
            assert!(GATE.load(Ordering::SeqCst) & SECTIONS >= 2);
            let m = Mutex::new(1);
            *m.lock() += 1;
            assert_eq!(own_depth(), 2);
            assert_eq!(*m.lock(), 2);
        }
        assert_eq!(own_depth(), 0);
    }

    #[test]
    fn a_pending_fork_holds_new_sections_until_it_is_done() {
        // Run the prepare and parent handlers by hand (no real fork) while another thread
        // tries to open a section: it must wait for the parent handler.
        let entered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        prepare();
        let t = {
            let entered = entered.clone();
            std::thread::spawn(move || {
                let _s = section();
                entered.store(true, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        let early = entered.load(Ordering::SeqCst);
        parent();
        t.join().unwrap();
        assert!(!early, "a section opened while a fork was pending");
        assert!(entered.load(Ordering::SeqCst));
    }

    #[test]
    fn per_process_builds_once_per_generation() {
        let p: PerProcess<u32> = PerProcess::new();
        let mut calls = 0;
        for _ in 0..3 {
            let v = p
                .get_or_try_init(|| {
                    calls += 1;
                    Ok(7)
                })
                .unwrap();
            assert_eq!(v, 7);
        }
        assert_eq!(calls, 1);
        let e = PerProcess::<u32>::new()
            .get_or_try_init(|| Err(crate::Error::Internal("no".into())))
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Internal);
    }

    #[test]
    fn background_stops_and_reports_running() {
        let bg = Background::start(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
        })
        .unwrap();
        assert!(bg.is_running());
        let h = bg.stop().unwrap();
        let r = crate::blocking::block_on(h).unwrap();
        assert!(r.unwrap_err().is_cancelled());
        assert!(!bg.is_running());
    }
}
