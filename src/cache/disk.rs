//! The disk tier for VOD slices (`[cache] disk_dir`, `disk_bytes`): every complete cacheable
//! slice of a `vod` route is also written to a file, so when memory evicts it, the next
//! request reads it back from disk instead of asking the node. Bounded in bytes, least recently
//! used files deleted first. The index lives in memory (status, headers, freshness); files
//! found in the directory at start are from an earlier run and are removed.
//!
//! A fill checks this tier before asking the node, so concurrent requests for one slice still
//! make one read.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

use super::key::Key;
use crate::registry::Node;

/// One slice on disk.
#[derive(Debug, Clone)]
pub struct Stored {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The node that answered (the access log names it).
    pub node: std::sync::Arc<Node>,
    /// When the node answered.
    pub stored: Instant,
    pub ttl: Duration,
    /// The file's id (its name is `{id}.slice`).
    id: u64,
    size: u64,
    tick: u64,
}

#[derive(Default)]
struct Index {
    map: HashMap<Key, Stored>,
    lru: BTreeMap<u64, Key>,
    tick: u64,
    next_id: u64,
    bytes: u64,
}

/// The disk tier.
pub struct Disk {
    dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
}

impl Disk {
    /// Opens the tier in `dir` (created), removing slices an earlier run left there.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        for e in std::fs::read_dir(dir)?.flatten() {
            if e.path().extension().is_some_and(|x| x == "slice") {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            index: Mutex::new(Index::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id}.slice"))
    }

    /// Bytes and files held.
    pub fn usage(&self) -> (u64, usize) {
        let i = self.lock();
        (i.bytes, i.map.len())
    }

    /// Writes a complete slice. Files past `max_bytes` (least recently used first) go.
    pub async fn put(
        &self,
        key: Key,
        (status, headers, node): (StatusCode, HeaderMap, std::sync::Arc<Node>),
        stored: Instant,
        ttl: Duration,
        body: Bytes,
    ) {
        let size = body.len() as u64;
        if size > self.max_bytes {
            return;
        }
        let id = {
            let mut i = self.lock();
            i.next_id += 1;
            i.next_id
        };
        let path = self.path(id);
        if let Err(e) = tokio::fs::write(&path, &body).await {
            tracing::warn!(error = %e, path = %path.display(), "cache disk tier: write failed");
            return;
        }
        let mut gone = Vec::new();
        {
            let mut i = self.lock();
            i.tick += 1;
            let tick = i.tick;
            if let Some(old) = i.map.remove(&key) {
                i.lru.remove(&old.tick);
                i.bytes -= old.size;
                gone.push(old.id);
            }
            i.lru.insert(tick, key.clone());
            i.bytes += size;
            i.map.insert(
                key,
                Stored {
                    status,
                    headers,
                    node,
                    stored,
                    ttl,
                    id,
                    size,
                    tick,
                },
            );
            while i.bytes > self.max_bytes {
                let Some((_, k)) = i.lru.pop_first() else {
                    break;
                };
                if let Some(e) = i.map.remove(&k) {
                    i.bytes -= e.size;
                    gone.push(e.id);
                }
            }
        }
        for id in gone {
            let _ = tokio::fs::remove_file(self.path(id)).await;
        }
    }

    /// A fresh slice under `key`, read back; a stale one is forgotten.
    pub async fn get(&self, key: &Key) -> Option<(Stored, Bytes)> {
        let now = Instant::now();
        let found = {
            let mut i = self.lock();
            i.tick += 1;
            let tick = i.tick;
            let e = i.map.get_mut(key)?;
            let fresh = now < e.stored + e.ttl;
            let old_tick = e.tick;
            e.tick = tick;
            let found = e.clone();
            i.lru.remove(&old_tick);
            i.lru.insert(tick, key.clone());
            fresh.then_some(found)
        };
        let Some(found) = found else {
            self.forget(key).await;
            return None;
        };
        match tokio::fs::read(self.path(found.id)).await {
            Ok(b) if b.len() as u64 == found.size => Some((found, Bytes::from(b))),
            _ => {
                self.forget(key).await;
                None
            }
        }
    }

    async fn forget(&self, key: &Key) {
        let id = {
            let mut i = self.lock();
            let Some(e) = i.map.remove(key) else { return };
            i.lru.remove(&e.tick);
            i.bytes -= e.size;
            e.id
        };
        let _ = tokio::fs::remove_file(self.path(id)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_lru_and_fresh_only() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join("7.slice"), b"stale").expect("old file");
        let d = Disk::open(dir.path(), 10).expect("open");
        assert!(
            !dir.path().join("7.slice").exists(),
            "an earlier run's files go"
        );
        let k = |n: u64| Key::new("/v", 0, "/f".into(), Some(n));
        let node = std::sync::Arc::new(Node {
            id: "n".into(),
            url: crate::upstream_path::BaseUrl::parse("http://127.0.0.1:1").expect("url"),
            expires: None,
        });
        let put = |n: u64, body: &'static [u8], ttl: u64| {
            d.put(
                k(n),
                (StatusCode::PARTIAL_CONTENT, HeaderMap::new(), node.clone()),
                Instant::now(),
                Duration::from_secs(ttl),
                Bytes::from_static(body),
            )
        };
        put(0, b"aaaa", 60).await;
        put(1, b"bbbb", 60).await;
        assert_eq!(d.get(&k(0)).await.expect("slice 0").1, "aaaa");
        put(2, b"cccc", 60).await;
        // 12 bytes > 10: slice 1, the least recently used, went.
        assert!(d.get(&k(1)).await.is_none());
        assert_eq!(d.usage(), (8, 2));
        put(3, b"dd", 0).await;
        assert!(d.get(&k(3)).await.is_none(), "stale slices are not served");
        assert_eq!(d.usage(), (8, 2));
    }
}
