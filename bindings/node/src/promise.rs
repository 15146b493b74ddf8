//! Promises settled from the core's runtime. The future is polled once on the JavaScript
//! thread (inside the runtime's context): an embedded operation completes there and the
//! promise is returned already settled, with no thread switch. Anything that has to wait is
//! spawned on clusterkit's shared runtime (`clusterkit::blocking::runtime()`); its result is
//! handed back to the JavaScript thread through ONE threadsafe function per JavaScript
//! environment (main thread or worker), which settles the promise there. One wake-up of the
//! event loop can settle many promises; the event loop never blocks. While promises are
//! pending the threadsafe function keeps the loop alive; otherwise it does not.

use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use napi::bindgen_prelude::{PromiseRaw, ToNapiValue};
use napi::{sys, Env, JsValue, Unknown};

use crate::errors::{to_napi, OrNapi};

/// The result of a spawned operation, converted on the JavaScript thread.
type Settle = Box<dyn FnOnce(Env) -> napi::Result<sys::napi_value> + Send>;

struct Message {
    deferred: sys::napi_deferred,
    settle: Result<Settle, napi::Error>,
}

/// One environment's threadsafe function; `open` turns false at the environment's teardown
/// (after which results are dropped, never sent to freed memory).
struct Channel {
    tsfn: Mutex<(bool, usize)>,
}

// SAFETY: the tsfn handle is only used through napi's threadsafe calls, under the mutex.
unsafe impl Send for Channel {}
unsafe impl Sync for Channel {}

impl Channel {
    fn send(&self, msg: Message) {
        let g = self.tsfn.lock().unwrap_or_else(|e| e.into_inner());
        if !g.0 {
            return;
        }
        let data = Box::into_raw(Box::new(msg));
        // SAFETY: the tsfn is open (checked under the lock the teardown hook takes).
        let status = unsafe {
            sys::napi_call_threadsafe_function(
                g.1 as sys::napi_threadsafe_function,
                data.cast(),
                sys::ThreadsafeFunctionCallMode::nonblocking,
            )
        };
        if status != sys::Status::napi_ok {
            // SAFETY: not queued: still ours.
            drop(unsafe { Box::from_raw(data) });
        }
    }
}

thread_local! {
    /// This JavaScript thread's channel and environment.
    static CHANNEL: RefCell<Option<(usize, Arc<Channel>)>> = const { RefCell::new(None) };
    /// Promises of this thread waiting for the runtime.
    static PENDING: Cell<usize> = const { Cell::new(0) };
}

unsafe extern "C" fn call_js(
    env: sys::napi_env,
    _f: sys::napi_value,
    _ctx: *mut c_void,
    data: *mut c_void,
) {
    // SAFETY: `data` is a Message boxed by Channel::send.
    let msg = unsafe { Box::from_raw(data.cast::<Message>()) };
    if env.is_null() {
        return; // the environment is tearing down: drop the result
    }
    let left = PENDING.with(|p| {
        let n = p.get().saturating_sub(1);
        p.set(n);
        n
    });
    if left == 0 {
        CHANNEL.with(|c| {
            if let Some((tsfn, _)) = &*c.borrow() {
                // SAFETY: on the JavaScript thread that owns the tsfn.
                unsafe {
                    sys::napi_unref_threadsafe_function(env, *tsfn as sys::napi_threadsafe_function)
                };
            }
        });
    }
    let settled = msg.settle.and_then(|f| f(Env::from_raw(env)));
    // SAFETY: on the JavaScript thread; the deferred is settled exactly once.
    unsafe {
        match settled {
            Ok(v) => sys::napi_resolve_deferred(env, msg.deferred, v),
            Err(e) => match ToNapiValue::to_napi_value(env, e) {
                Ok(err) => sys::napi_reject_deferred(env, msg.deferred, err),
                Err(_) => sys::Status::napi_generic_failure,
            },
        };
    }
}

unsafe extern "C" fn teardown(arg: *mut c_void) {
    // SAFETY: `arg` is the Arc<Channel> leaked in channel() for this hook.
    let ch = unsafe { Arc::from_raw(arg.cast::<Channel>()) };
    ch.tsfn.lock().unwrap_or_else(|e| e.into_inner()).0 = false;
    CHANNEL.with(|c| c.borrow_mut().take());
}

/// This thread's channel, created on first use.
fn channel(env: &Env) -> napi::Result<(usize, Arc<Channel>)> {
    if let Some(c) = CHANNEL.with(|c| c.borrow().clone()) {
        return Ok(c);
    }
    let raw = env.raw();
    let mut name = std::ptr::null_mut();
    let mut tsfn = std::ptr::null_mut();
    // SAFETY: plain napi calls on the JavaScript thread with valid out-pointers.
    unsafe {
        let n = "clusterkit";
        napi::check_status!(sys::napi_create_string_utf8(
            raw,
            n.as_ptr().cast(),
            n.len() as isize,
            &mut name
        ))?;
        napi::check_status!(sys::napi_create_threadsafe_function(
            raw,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            name,
            0,
            1,
            std::ptr::null_mut(),
            None,
            std::ptr::null_mut(),
            Some(call_js),
            &mut tsfn,
        ))?;
        napi::check_status!(sys::napi_unref_threadsafe_function(raw, tsfn))?;
    }
    let ch = Arc::new(Channel {
        tsfn: Mutex::new((true, tsfn as usize)),
    });
    let hook = Arc::into_raw(ch.clone());
    // SAFETY: the hook gets back the Arc leaked here.
    unsafe {
        napi::check_status!(sys::napi_add_env_cleanup_hook(
            raw,
            Some(teardown),
            hook as *mut c_void
        ))?;
    }
    let entry = (tsfn as usize, ch);
    CHANNEL.with(|c| *c.borrow_mut() = Some(entry.clone()));
    Ok(entry)
}

/// Runs `fut` and returns a Promise of its output converted by `convert` (which runs on the
/// JavaScript thread, so it may build JavaScript values). With `inline` (embedded backends)
/// the future is first polled on the calling thread and usually completes there; a network
/// operation goes straight to the runtime (measured: polling it first on the JavaScript thread
/// wakes the connection's task and this task on two workers instead of one, ~1.3-1.8x slower
/// at one operation in flight).
pub(crate) fn spawn<'env, T, V, F, C>(
    env: &'env Env,
    inline: bool,
    fut: F,
    convert: C,
) -> napi::Result<Unknown<'env>>
where
    T: Send + 'static,
    V: ToNapiValue + 'static,
    F: Future<Output = clusterkit::Result<T>> + Send + 'static,
    C: FnOnce(Env, T) -> napi::Result<V> + Send + 'static,
{
    let rt = clusterkit::blocking::runtime().or_napi()?;
    let mut fut = Box::pin(fut);
    if inline {
        let _context = rt.enter();
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
            let p = match r {
                Ok(v) => PromiseRaw::resolve(env, convert(*env, v)?)?,
                Err(e) => PromiseRaw::<V>::reject(env, to_napi(e))?,
            };
            return Ok(p.to_unknown());
        }
    }
    let (tsfn, ch) = channel(env)?;
    let raw = env.raw();
    let mut deferred = std::ptr::null_mut();
    let mut promise = std::ptr::null_mut();
    // SAFETY: on the JavaScript thread with valid out-pointers.
    unsafe { napi::check_status!(sys::napi_create_promise(raw, &mut deferred, &mut promise))? };
    if PENDING.with(|p| {
        let n = p.get();
        p.set(n + 1);
        n == 0
    }) {
        // SAFETY: on the JavaScript thread that owns the tsfn.
        unsafe { sys::napi_ref_threadsafe_function(raw, tsfn as sys::napi_threadsafe_function) };
    }
    let deferred = deferred as usize;
    rt.spawn(async move {
        let r = fut.await;
        let settle: Result<Settle, napi::Error> = match r {
            Ok(v) => Ok(Box::new(move |env: Env| {
                let v = convert(env, v)?;
                // SAFETY: on the JavaScript thread (call_js).
                unsafe { V::to_napi_value(env.raw(), v) }
            })),
            Err(e) => Err(to_napi(e)),
        };
        ch.send(Message {
            deferred: deferred as sys::napi_deferred,
            settle,
        });
    });
    // SAFETY: a promise just created in this env.
    Ok(unsafe { Unknown::from_raw_unchecked(raw, promise) })
}
