//! Listing and clearing the sessions of a namespace: what framework session stores need for
//! their `all`/`length`/`ids`/`clear` operations (express-session's Store, for one).
//!
//! Supported on the embedded backend and on one Redis server (SCAN over the namespace's
//! session keys, `<namespace>:s:{<id>}`, in batches). On a sharded pool or a Redis Cluster the
//! sessions are spread over several servers and these calls fail with
//! [`Error::Unavailable`]; every other session operation works there.

use std::time::Instant;

use redis::Script;

use super::{parse_id, SessionStore, Storage};
use crate::cache::Backend;
use crate::error::{Error, Result};

/// One SCAN step inside a script (so it runs on the connection the session scripts use).
/// ARGV: cursor, pattern. Returns {next cursor, keys}.
const LUA_SCAN: &str = "return redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', 1000)";

impl SessionStore {
    /// The ids of every live session of this namespace (in no particular order).
    ///
    /// Fails with [`Error::Unavailable`] on a sharded pool or a Redis Cluster (see the
    /// module docs), or with the backend's error.
    pub async fn ids(&self) -> Result<Vec<String>> {
        let prefix = &self.inner.prefix;
        let id_of = |key: &[u8]| -> Option<String> {
            let rest = key.strip_prefix(prefix.as_slice())?;
            let inner = rest.strip_prefix(b"{")?.strip_suffix(b"}")?;
            parse_id(inner).map(str::to_string)
        };
        match &self.inner.storage {
            Storage::Memory(b) => {
                let mut map = self.mem(b);
                let now = Instant::now();
                let keys: Vec<Vec<u8>> = map
                    .map
                    .keys()
                    .filter(|k| k.starts_with(prefix))
                    .cloned()
                    .collect();
                Ok(keys
                    .into_iter()
                    .filter(|k| map.live(k, now).is_some())
                    .filter_map(|k| id_of(&k))
                    .collect())
            }
            Storage::Redis(b) => {
                let Backend::Redis(c) = &**b else {
                    return Err(Error::Unavailable(
                        "listing sessions needs the embedded backend or one Redis server".into(),
                    ));
                };
                let script = Script::new(LUA_SCAN);
                let mut pattern = crate::cache::glob_escape(prefix);
                pattern.push(b'*');
                let mut cursor = b"0".to_vec();
                let mut out = Vec::new();
                loop {
                    let (next, keys): (Vec<u8>, Vec<Vec<u8>>) =
                        c.eval(&script, &[], &[&cursor, &pattern]).await?;
                    out.extend(keys.iter().filter_map(|k| id_of(k)));
                    if next == b"0" {
                        return Ok(out);
                    }
                    cursor = next;
                }
            }
        }
    }

    /// Deletes every session of this namespace; returns how many existed. Fails like
    /// [`SessionStore::ids`].
    pub async fn clear(&self) -> Result<u64> {
        let mut n = 0;
        for id in self.ids().await? {
            if self.destroy(id.as_bytes()).await? {
                n += 1;
            }
        }
        Ok(n)
    }
}

impl SessionStore {
    /// A new, empty session with the caller's `id` instead of a fresh one: for frameworks that
    /// make their own session ids (express-session, @fastify/session). Nothing is stored until
    /// [`SessionStore::save`]; saving over an existing session's id replaces its fields
    /// written by this session.
    ///
    /// Fails with [`Error::InvalidArgument`] (`id`) unless `id` has the shape of a session id
    /// (32 characters of `[A-Za-z0-9_-]`).
    pub fn create_with_id(&self, id: &str) -> Result<super::Session> {
        let id = parse_id(id.as_bytes())
            .ok_or_else(|| Error::invalid("id", "must be 32 characters of [A-Za-z0-9_-]"))?;
        Ok(super::Session::fresh(
            id.to_string(),
            std::collections::BTreeMap::new(),
            super::now_ms(),
            true,
            None,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::cache::{Cache, MemoryOptions};
    use crate::session::{SessionOptions, SessionStore};

    #[tokio::test]
    async fn ids_clear_and_framework_ids_on_the_embedded_backend() {
        let cache = Cache::memory("app", MemoryOptions::default()).unwrap();
        let other = SessionStore::new(
            &cache.with_namespace("other").unwrap(),
            SessionOptions::default(),
        )
        .unwrap();
        let store = SessionStore::new(
            &cache,
            SessionOptions::default()
                .with_timeouts(Duration::from_millis(40), Duration::from_secs(60)),
        )
        .unwrap();
        let mut a = store.create().unwrap();
        a.set("k", "v");
        store.save(&mut a).await.unwrap();
        let fid = "abcdefghijklmnopqrstuvwxyz-_0123";
        let mut b = store.create_with_id(fid).unwrap();
        assert_eq!(b.id(), fid);
        b.set("k", "w");
        store.save(&mut b).await.unwrap();
        let mut o = other.create().unwrap();
        o.set("k", "x");
        other.save(&mut o).await.unwrap();
        let mut ids = store.ids().await.unwrap();
        ids.sort();
        let mut want = vec![a.id().to_string(), fid.to_string()];
        want.sort();
        assert_eq!(ids, want, "only this namespace's sessions");
        assert_eq!(
            store
                .load(fid.as_bytes())
                .await
                .unwrap()
                .unwrap()
                .get("k")
                .unwrap()
                .as_ref(),
            b"w"
        );
        assert!(store.create_with_id("short").is_err());
        assert!(store
            .create_with_id("abcdefghijklmnopqrstuvwxyz/_0123")
            .is_err());
        assert_eq!(store.clear().await.unwrap(), 2);
        assert!(store.ids().await.unwrap().is_empty());
        assert_eq!(other.ids().await.unwrap().len(), 1);
        // expired sessions are not listed
        let mut c = store.create().unwrap();
        c.set("k", "v");
        store.save(&mut c).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(store.ids().await.unwrap().is_empty());
    }
}
