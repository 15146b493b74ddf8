//! Sessions: create, load (optionally locked), read and change fields, save (delta), touch,
//! regenerate, destroy; and the listing an express-session store needs (ids, clear).

use std::sync::{Arc, Mutex};

use clusterkit::session::{Session as CoreSession, SessionStore};
use napi::bindgen_prelude::Buffer;
use napi::{Env, Unknown};
use napi_derive::napi;

use crate::cache::bytes;
use crate::errors::to_napi;
use crate::promise::spawn;
use napi::bindgen_prelude::Either;

/// The session store (native handle; see index.js `Sessions`).
#[napi]
pub struct Sessions {
    pub(crate) inner: SessionStore,
    /// Embedded backend: operations complete during the call.
    pub(crate) inline: bool,
}

type Slot = Arc<Mutex<Option<CoreSession>>>;

/// One session as a request sees it (native handle).
#[napi]
pub struct Session {
    slot: Slot,
}

fn busy() -> napi::Error {
    to_napi(clusterkit::Error::Conflict(
        "this session object is being saved; await that first".into(),
    ))
}

impl Session {
    fn wrap(s: CoreSession) -> Session {
        Session {
            slot: Arc::new(Mutex::new(Some(s))),
        }
    }
    fn with<T>(&self, f: impl FnOnce(&mut CoreSession) -> T) -> napi::Result<T> {
        let mut g = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        g.as_mut().map(f).ok_or_else(busy)
    }
    fn take(&self) -> napi::Result<(CoreSession, Slot)> {
        let s = self
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(busy)?;
        Ok((s, self.slot.clone()))
    }
}

fn put_back(slot: &Slot, s: CoreSession) {
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
}

#[napi]
impl Session {
    /// The session id (a credential: never log it).
    #[napi(getter)]
    pub fn id(&self) -> napi::Result<String> {
        self.with(|s| s.id().to_string())
    }
    /// True until the first save.
    #[napi(getter)]
    pub fn is_new(&self) -> napi::Result<bool> {
        self.with(|s| s.is_new())
    }
    /// True when fields changed since the load.
    #[napi(getter)]
    pub fn is_modified(&self) -> napi::Result<bool> {
        self.with(|s| s.is_modified())
    }
    /// Creation time (Unix ms).
    #[napi(getter)]
    pub fn created_at(&self) -> napi::Result<f64> {
        self.with(|s| s.created_at_ms() as f64)
    }
    /// Field `name` as a Buffer, or null.
    #[napi]
    pub fn get(&self, name: String) -> napi::Result<Option<Buffer>> {
        self.with(|s| s.get(&name).map(|b| Buffer::from(b.to_vec())))
    }
    /// Field `name` as a string (UTF-8), or null.
    #[napi]
    pub fn get_string(&self, name: String) -> napi::Result<Option<String>> {
        self.with(|s| {
            s.get(&name)
                .map(|b| String::from_utf8_lossy(b).into_owned())
        })
    }
    /// Sets field `name` (saved by the next `save`, with only the changed fields).
    #[napi]
    pub fn set(&self, name: String, value: Either<String, Buffer>) -> napi::Result<()> {
        let v = bytes(value);
        self.with(|s| s.set(name, v))
    }
    /// Removes field `name`.
    #[napi]
    pub fn remove(&self, name: String) -> napi::Result<()> {
        self.with(|s| s.remove(&name))
    }
    /// The field names.
    #[napi]
    pub fn keys(&self) -> napi::Result<Vec<String>> {
        self.with(|s| s.keys().map(str::to_string).collect())
    }
}

#[napi]
impl Sessions {
    /// A new, empty session with a fresh id (stored by its first save). Synchronous.
    #[napi]
    pub fn create(&self) -> napi::Result<Session> {
        Ok(Session::wrap(self.inner.create().map_err(to_napi)?))
    }

    /// A new, empty session with the caller's `id` (32 characters of `[A-Za-z0-9_-]`, as
    /// express-session makes them). Synchronous.
    #[napi]
    pub fn create_with_id(&self, id: String) -> napi::Result<Session> {
        Ok(Session::wrap(
            self.inner.create_with_id(&id).map_err(to_napi)?,
        ))
    }

    /// Loads session `id`: null when unknown, expired or malformed.
    #[napi(ts_return_type = "Promise<Session | null>")]
    pub fn load<'e>(&self, env: &'e Env, id: String) -> napi::Result<Unknown<'e>> {
        let st = self.inner.clone();
        spawn(
            env,
            self.inline,
            async move { st.load(id.as_bytes()).await },
            |_, s| Ok(s.map(Session::wrap)),
        )
    }

    /// Loads session `id` and takes its lock (released by `save` or `unlock`).
    #[napi(ts_return_type = "Promise<Session | null>")]
    pub fn load_locked<'e>(&self, env: &'e Env, id: String) -> napi::Result<Unknown<'e>> {
        let st = self.inner.clone();
        spawn(
            env,
            self.inline,
            async move { st.load_locked(id.as_bytes()).await },
            |_, s| Ok(s.map(Session::wrap)),
        )
    }

    /// Saves the changed fields and refreshes the idle timeout (one round trip).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn save<'e>(&self, env: &'e Env, session: &Session) -> napi::Result<Unknown<'e>> {
        let st = self.inner.clone();
        let (mut s, slot) = session.take()?;
        spawn(
            env,
            self.inline,
            async move {
                let r = st.save(&mut s).await;
                put_back(&slot, s);
                r
            },
            |_, ()| Ok(()),
        )
    }

    /// Releases the session's lock without saving.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn unlock<'e>(&self, env: &'e Env, session: &Session) -> napi::Result<Unknown<'e>> {
        let st = self.inner.clone();
        let (mut s, slot) = session.take()?;
        spawn(
            env,
            self.inline,
            async move {
                let r = st.unlock(&mut s).await;
                put_back(&slot, s);
                r
            },
            |_, ()| Ok(()),
        )
    }

    /// Gives the session a new id (same data); the old id stops working.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn regenerate<'e>(&self, env: &'e Env, session: &Session) -> napi::Result<Unknown<'e>> {
        let st = self.inner.clone();
        let (mut s, slot) = session.take()?;
        spawn(
            env,
            self.inline,
            async move {
                let r = st.regenerate(&mut s).await;
                put_back(&slot, s);
                r
            },
            |_, ()| Ok(()),
        )
    }

    /// Deletes session `id`; resolves with whether it existed.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn destroy<'e>(&self, env: &'e Env, id: String) -> napi::Result<Unknown<'e>> {
        let st = self.inner.clone();
        spawn(
            env,
            self.inline,
            async move { st.destroy(id.as_bytes()).await },
            |_, b| Ok(b),
        )
    }

    /// Refreshes the idle timeout of session `id`; resolves with whether it exists.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn touch<'e>(&self, env: &'e Env, id: String) -> napi::Result<Unknown<'e>> {
        let st = self.inner.clone();
        spawn(
            env,
            self.inline,
            async move { st.touch(id.as_bytes()).await },
            |_, b| Ok(b),
        )
    }

    /// The ids of every live session of this namespace.
    #[napi(ts_return_type = "Promise<Array<string>>")]
    pub fn ids<'e>(&self, env: &'e Env) -> napi::Result<Unknown<'e>> {
        let st = self.inner.clone();
        spawn(env, self.inline, async move { st.ids().await }, |_, v| {
            Ok(v)
        })
    }

    /// Deletes every session of this namespace; resolves with how many.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn clear<'e>(&self, env: &'e Env) -> napi::Result<Unknown<'e>> {
        let st = self.inner.clone();
        spawn(env, self.inline, async move { st.clear().await }, |_, n| {
            Ok(n as f64)
        })
    }
}
