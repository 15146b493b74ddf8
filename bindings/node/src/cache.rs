//! The cache: keys and values are Buffers or strings; every operation returns a Promise.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clusterkit::cache::Ttl;
use napi::bindgen_prelude::{Buffer, Either};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status, Unknown};
use napi_derive::napi;
use tokio::sync::oneshot;

use crate::errors::{invalid, ms};
use crate::promise::spawn;

pub(crate) fn bytes(d: Either<String, Buffer>) -> Bytes {
    match d {
        Either::A(s) => Bytes::from(s.into_bytes()),
        Either::B(b) => Bytes::copy_from_slice(&b),
    }
}

fn opt_ttl(ttl_ms: Option<f64>) -> napi::Result<Option<Duration>> {
    ttl_ms.map(|t| ms("ttl", t)).transpose()
}

/// Pending computations of `getOrCompute`, by call id: the JavaScript side runs the user's
/// function and answers through `computeDone`.
type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Result<Bytes, String>>>>>;

/// The cache (native handle; see index.js `Cache`).
#[napi]
pub struct Cache {
    inner: clusterkit::cache::Cache,
    /// Embedded backend: operations complete during the call.
    inline: bool,
    pending: Pending,
    compute: Option<Arc<ThreadsafeFunction<u32, (), u32, Status, false, true>>>,
}

impl Cache {
    pub(crate) fn new(inner: clusterkit::cache::Cache) -> Cache {
        Cache {
            inline: inner.memory_weight().is_some(),
            inner,
            pending: Arc::default(),
            compute: None,
        }
    }
}

fn buf(v: Option<Bytes>) -> Option<Buffer> {
    v.map(|b| Buffer::from(b.to_vec()))
}

#[napi]
impl Cache {
    /// The namespace.
    #[napi(getter)]
    pub fn namespace(&self) -> String {
        self.inner.namespace().to_string()
    }

    #[napi(ts_return_type = "Promise<Buffer | null>")]
    pub fn get<'e>(&self, env: &'e Env, key: Either<String, Buffer>) -> napi::Result<Unknown<'e>> {
        let c = self.inner.clone();
        let k = bytes(key);
        spawn(env, self.inline, async move { c.get(&k).await }, |_, v| {
            Ok(buf(v))
        })
    }

    #[napi(ts_return_type = "Promise<string | null>")]
    pub fn get_string<'e>(
        &self,
        env: &'e Env,
        key: Either<String, Buffer>,
    ) -> napi::Result<Unknown<'e>> {
        let c = self.inner.clone();
        let k = bytes(key);
        spawn(env, self.inline, async move { c.get(&k).await }, |_, v| {
            Ok(v.map(|b| String::from_utf8_lossy(&b).into_owned()))
        })
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn set<'e>(
        &self,
        env: &'e Env,
        key: Either<String, Buffer>,
        value: Either<String, Buffer>,
        ttl_ms: Option<f64>,
    ) -> napi::Result<Unknown<'e>> {
        let c = self.inner.clone();
        let (k, v, ttl) = (bytes(key), bytes(value), opt_ttl(ttl_ms)?);
        spawn(
            env,
            self.inline,
            async move { c.set(&k, v, ttl).await },
            |_, ()| Ok(()),
        )
    }

    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn add<'e>(
        &self,
        env: &'e Env,
        key: Either<String, Buffer>,
        value: Either<String, Buffer>,
        ttl_ms: Option<f64>,
    ) -> napi::Result<Unknown<'e>> {
        let c = self.inner.clone();
        let (k, v, ttl) = (bytes(key), bytes(value), opt_ttl(ttl_ms)?);
        spawn(
            env,
            self.inline,
            async move { c.add(&k, v, ttl).await },
            |_, b| Ok(b),
        )
    }

    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn delete<'e>(
        &self,
        env: &'e Env,
        key: Either<String, Buffer>,
    ) -> napi::Result<Unknown<'e>> {
        let c = self.inner.clone();
        let k = bytes(key);
        spawn(
            env,
            self.inline,
            async move { c.delete(&k).await },
            |_, b| Ok(b),
        )
    }

    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn has<'e>(&self, env: &'e Env, key: Either<String, Buffer>) -> napi::Result<Unknown<'e>> {
        let c = self.inner.clone();
        let k = bytes(key);
        spawn(env, self.inline, async move { c.has(&k).await }, |_, b| {
            Ok(b)
        })
    }

    #[napi(ts_return_type = "Promise<Array<Buffer | null>>")]
    pub fn get_many<'e>(
        &self,
        env: &'e Env,
        keys: Vec<Either<String, Buffer>>,
    ) -> napi::Result<Unknown<'e>> {
        let c = self.inner.clone();
        let ks: Vec<Bytes> = keys.into_iter().map(bytes).collect();
        spawn(
            env,
            self.inline,
            async move { c.get_many(&ks).await },
            |_, v| Ok(v.into_iter().map(buf).collect::<Vec<_>>()),
        )
    }

    #[napi(ts_return_type = "Promise<void>")]
    pub fn set_many<'e>(
        &self,
        env: &'e Env,
        keys: Vec<Either<String, Buffer>>,
        values: Vec<Either<String, Buffer>>,
        ttl_ms: Option<f64>,
    ) -> napi::Result<Unknown<'e>> {
        if keys.len() != values.len() {
            return Err(invalid("values", "must have one value per key"));
        }
        let c = self.inner.clone();
        let ttl = opt_ttl(ttl_ms)?;
        let items: Vec<(Bytes, Bytes)> = keys
            .into_iter()
            .map(bytes)
            .zip(values.into_iter().map(bytes))
            .collect();
        spawn(
            env,
            self.inline,
            async move { c.set_many(items, ttl).await },
            |_, ()| Ok(()),
        )
    }

    #[napi(ts_return_type = "Promise<number>")]
    pub fn delete_many<'e>(
        &self,
        env: &'e Env,
        keys: Vec<Either<String, Buffer>>,
    ) -> napi::Result<Unknown<'e>> {
        let c = self.inner.clone();
        let ks: Vec<Bytes> = keys.into_iter().map(bytes).collect();
        spawn(
            env,
            self.inline,
            async move { c.delete_many(&ks).await },
            |_, n| Ok(n as f64),
        )
    }

    /// Adds `delta` (an integer, default 1) and resolves with the new value.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn incr<'e>(
        &self,
        env: &'e Env,
        key: Either<String, Buffer>,
        delta: Option<i64>,
    ) -> napi::Result<Unknown<'e>> {
        let c = self.inner.clone();
        let k = bytes(key);
        let d = delta.unwrap_or(1);
        spawn(
            env,
            self.inline,
            async move { c.increment(&k, d).await },
            |_, n| Ok(n),
        )
    }

    /// Remaining lifetime in ms: null when the key is absent, -1 when it never expires.
    #[napi(ts_return_type = "Promise<number | null>")]
    pub fn ttl<'e>(&self, env: &'e Env, key: Either<String, Buffer>) -> napi::Result<Unknown<'e>> {
        let c = self.inner.clone();
        let k = bytes(key);
        spawn(env, self.inline, async move { c.ttl(&k).await }, |_, t| {
            Ok(match t {
                Ttl::Missing => None,
                Ttl::Persistent => Some(-1.0),
                Ttl::Expires(d) => Some(d.as_millis() as f64),
            })
        })
    }

    /// Deletes this namespace's cache entries; resolves with how many.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn clear<'e>(&self, env: &'e Env) -> napi::Result<Unknown<'e>> {
        let c = self.inner.clone();
        spawn(env, self.inline, async move { c.clear().await }, |_, n| {
            Ok(n as f64)
        })
    }

    /// Installs the JavaScript side of `getOrCompute` (called once by index.js): `callback(id)`
    /// runs the user's function for call `id` and answers with `computeDone`.
    #[napi(ts_args_type = "callback: (id: number) => void")]
    pub fn set_compute_callback(
        &mut self,
        callback: ThreadsafeFunction<u32, (), u32, Status, false, true>,
    ) {
        self.compute = Some(Arc::new(callback));
    }

    /// Answers call `id` of `getOrCompute`: a value, or an error message.
    #[napi]
    pub fn compute_done(
        &self,
        id: u32,
        error: Option<String>,
        value: Option<Either<String, Buffer>>,
    ) {
        let tx = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(tx) = tx {
            let _ = tx.send(match (error, value) {
                (None, Some(v)) => Ok(bytes(v)),
                (Some(e), _) => Err(e),
                (None, None) => Err("the compute function returned no value".into()),
            });
        }
    }

    /// The value of `key`, computed by the JavaScript function of call `id` on a miss;
    /// concurrent misses of one key in this process share one computation (core's
    /// get_or_compute).
    #[napi(ts_return_type = "Promise<Buffer>")]
    pub fn get_or_compute<'e>(
        &self,
        env: &'e Env,
        key: Either<String, Buffer>,
        ttl_ms: f64,
        id: u32,
    ) -> napi::Result<Unknown<'e>> {
        let c = self.inner.clone();
        let k = bytes(key);
        let ttl = ms("ttl", ttl_ms)?;
        let tsfn = self
            .compute
            .clone()
            .ok_or_else(|| invalid("callback", "setComputeCallback was not called"))?;
        let pending = self.pending.clone();
        let fut = async move {
            c.get_or_compute(&k, ttl, move || async move {
                let (tx, rx) = oneshot::channel();
                pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, tx);
                let status = tsfn.call(id, ThreadsafeFunctionCallMode::NonBlocking);
                if status != Status::Ok {
                    pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                    return Err(clusterkit::Error::Closed(
                        "the JavaScript environment is gone".into(),
                    ));
                }
                match rx.await {
                    Ok(Ok(v)) => Ok(v),
                    // The message is only a marker: index.js rethrows the user's own error.
                    Ok(Err(m)) => Err(clusterkit::Error::Internal(format!("compute failed: {m}"))),
                    Err(_) => Err(clusterkit::Error::Closed(
                        "the compute call was dropped".into(),
                    )),
                }
            })
            .await
        };
        spawn(env, self.inline, fut, |_, v| Ok(Buffer::from(v.to_vec())))
    }
}
