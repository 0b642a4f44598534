//! What identifies a cached object, and the publish epochs that keep a restarted stream's
//! objects apart from the old ones.
//!
//! A key is the route, the stream's publish epoch, and the request target as sent to the node
//! (upstream path plus the query without viewer credentials, so tokens, signatures and HLS
//! session parameters never split the cache), plus the slice index for VOD slices. LL-HLS
//! `_HLS_msn` / `_HLS_part` stay in the key: each blocking reload is its own object.
//!
//! A stream restarted under the same segment names (`seg0.ts` again) must never be served the
//! old `seg0.ts`. Each stream scope (the route's `{stream}` capture, else the playlist's
//! directory) has an epoch in every key; when a media playlist's `EXT-X-MEDIA-SEQUENCE` goes
//! backwards, the stream restarted and its scope gets a new epoch: every old object becomes
//! unreachable (and is dropped).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One cached object's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The route's configured path pattern (bounded by the config).
    pub route: Arc<str>,
    /// The stream scope's publish epoch.
    pub epoch: u64,
    /// Upstream path and credential-free query.
    pub target: String,
    /// VOD slice index (`None`: the whole object).
    pub slice: Option<u64>,
}

impl Key {
    pub fn new(route: &str, epoch: u64, target: String, slice: Option<u64>) -> Self {
        Self::shared(Arc::from(route), epoch, target, slice)
    }

    /// [`Key::new`] with the route's name already shared (from [`Epochs::epoch_and_route`]).
    pub fn shared(route: Arc<str>, epoch: u64, target: String, slice: Option<u64>) -> Self {
        Self {
            route,
            epoch,
            target,
            slice,
        }
    }
}

/// `path_and_query` without the query parameters `ignore` names (`[cache] ignore_params`):
/// what the cache keys on and what a fill asks the node for.
/// Takes the string and hands it back unchanged when no parameter goes (no copy).
pub fn without_params(path_and_query: String, ignore: &[String]) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query;
    };
    if ignore.is_empty() {
        return path_and_query;
    }
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| {
            let k = p.split('=').next().unwrap_or("");
            !p.is_empty() && !ignore.iter().any(|i| i == k)
        })
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// The scope a request's stream is tracked in: the `{stream}` capture when the route has one,
/// else the directory of the upstream path (nginx-rtmp's nested `/hls/NAME/…`).
pub fn scope<'a>(stream: Option<&'a str>, target: &'a str) -> &'a str {
    if let Some(s) = stream {
        return s;
    }
    let path = target.split('?').next().unwrap_or(target);
    match path.rfind('/') {
        Some(i) => &path[..i],
        None => "",
    }
}

/// Most stream scopes tracked; past it the least recently seen is forgotten (its objects then
/// miss once, under a fresh epoch).
const MAX_SCOPES: usize = 20_000;
/// Most media playlists remembered per scope (renditions).
const MAX_PLAYLISTS: usize = 64;

#[derive(Debug)]
struct Scope {
    /// The route's name and the scope as the map's key holds them (shared with the request's
    /// [`Key`] and fill).
    route: Arc<str>,
    name: Arc<str>,
    epoch: u64,
    /// Last `EXT-X-MEDIA-SEQUENCE` seen per media playlist target (without query).
    sequences: HashMap<String, u64>,
    /// The stream's target duration, from its last media playlist.
    target_duration: Option<Duration>,
    used: u64,
}

/// Publish epochs by (route, scope).
#[derive(Debug, Default)]
pub struct Epochs {
    scopes: Mutex<HashMap<ScopeKey, Scope>>,
    /// Epochs are never reused, so a forgotten scope cannot revive old objects.
    next: AtomicU64,
    tick: AtomicU64,
}

/// A (route, scope) pair as the epochs' map is asked for it: borrowed, so a lookup of a known
/// scope (every request on a cached route) copies neither string.
trait ScopeId {
    fn parts(&self) -> (&str, &str);
}

/// The epochs' map key: the route's name and the scope.
type ScopeKey = (Arc<str>, Arc<str>);

impl ScopeId for ScopeKey {
    fn parts(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl ScopeId for (&str, &str) {
    fn parts(&self) -> (&str, &str) {
        (self.0, self.1)
    }
}

impl<'a> Borrow<dyn ScopeId + 'a> for ScopeKey {
    fn borrow(&self) -> &(dyn ScopeId + 'a) {
        self
    }
}

/// As the owned tuple hashes: each `str` in turn.
impl Hash for dyn ScopeId + '_ {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.parts().hash(h);
    }
}

impl PartialEq for dyn ScopeId + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn ScopeId + '_ {}

impl Epochs {
    fn with<T>(&self, route: &str, scope: &str, f: impl FnOnce(&mut Scope) -> T) -> T {
        let mut map = self.scopes.lock().unwrap_or_else(|p| p.into_inner());
        let used = self.tick.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = map.get_mut(&(route, scope) as &dyn ScopeId) {
            s.used = used;
            return f(s);
        }
        let k: ScopeKey = (Arc::from(route), Arc::from(scope));
        if !map.contains_key(&k) && map.len() >= MAX_SCOPES {
            if let Some(old) = map
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone())
            {
                map.remove(&old);
            }
        }
        let (route, name) = k.clone();
        let s = map.entry(k).or_insert_with(|| Scope {
            route,
            name,
            epoch: self.next.fetch_add(1, Ordering::Relaxed),
            sequences: HashMap::new(),
            target_duration: None,
            used,
        });
        s.used = used;
        f(s)
    }

    /// The scope's current epoch.
    #[cfg(test)]
    pub fn epoch(&self, route: &str, scope: &str) -> u64 {
        self.with(route, scope, |s| s.epoch)
    }

    /// The scope's current epoch, and the route's name and the scope shared for the request's
    /// [`Key`] and fill.
    pub fn epoch_and_route(&self, route: &str, scope: &str) -> (u64, Arc<str>, Arc<str>) {
        self.with(route, scope, |s| (s.epoch, s.route.clone(), s.name.clone()))
    }

    /// The stream's target duration, when a media playlist told it.
    pub fn target_duration(&self, route: &str, scope: &str) -> Option<Duration> {
        self.with(route, scope, |s| s.target_duration)
    }

    /// Records a media playlist fetched under `epoch`. Returns the epoch it replaced when the
    /// playlist's media sequence went backwards: the stream restarted.
    pub fn observe(
        &self,
        route: &str,
        scope: &str,
        epoch: u64,
        playlist: &str,
        sequence: u64,
        target_duration: Option<Duration>,
    ) -> Option<u64> {
        let path = playlist.split('?').next().unwrap_or(playlist).to_string();
        self.with(route, scope, |s| {
            if target_duration.is_some() {
                s.target_duration = target_duration;
            }
            if s.epoch != epoch {
                // Fetched before a restart was seen: says nothing about the new run.
                return None;
            }
            let restarted = s.sequences.get(&path).is_some_and(|&last| sequence < last);
            if restarted {
                let old = s.epoch;
                s.epoch = self.next.fetch_add(1, Ordering::Relaxed);
                s.sequences.clear();
                s.sequences.insert(path, sequence);
                return Some(old);
            }
            if s.sequences.len() >= MAX_PLAYLISTS && !s.sequences.contains_key(&path) {
                s.sequences.clear();
            }
            s.sequences.insert(path, sequence);
            None
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_params_leave_the_key() {
        let ig = vec!["sid".to_string(), "_".to_string()];
        assert_eq!(without_params("/a.ts?sid=1&_=2".into(), &ig), "/a.ts");
        assert_eq!(
            without_params("/a.m3u8?_HLS_msn=3&sid=9".into(), &ig),
            "/a.m3u8?_HLS_msn=3"
        );
        assert_eq!(without_params("/a.ts".into(), &ig), "/a.ts");
        assert_eq!(without_params("/a.ts?sidx=1".into(), &ig), "/a.ts?sidx=1");
    }

    #[test]
    fn scopes_and_restarts() {
        assert_eq!(scope(Some("cam1"), "/hls/cam1/i.m3u8"), "cam1");
        assert_eq!(scope(None, "/hls/cam1/i.m3u8?x=1"), "/hls/cam1");
        let e = Epochs::default();
        let first = e.epoch("r", "/hls/a");
        assert_eq!(e.epoch("r", "/hls/a"), first);
        assert_ne!(e.epoch("r", "/hls/b"), first);
        let td = Some(Duration::from_secs(2));
        assert_eq!(
            e.observe("r", "/hls/a", first, "/hls/a/i.m3u8", 5, td),
            None
        );
        assert_eq!(
            e.observe("r", "/hls/a", first, "/hls/a/i.m3u8", 7, td),
            None
        );
        assert_eq!(e.target_duration("r", "/hls/a"), td);
        // Backwards: a restart. The epoch changes, once.
        assert_eq!(
            e.observe("r", "/hls/a", first, "/hls/a/i.m3u8?_HLS_msn=1", 0, td),
            Some(first)
        );
        let second = e.epoch("r", "/hls/a");
        assert_ne!(second, first);
        let (epoch, route, scope) = e.epoch_and_route("r", "/hls/a");
        assert_eq!(
            (epoch, &*route, &*scope),
            (second, "r", "/hls/a"),
            "found without a copy of the key"
        );
        assert_eq!(
            e.scopes.lock().expect("lock").len(),
            2,
            "looked up, never added twice"
        );
        // A playlist fetched under the old epoch says nothing about the new run.
        assert_eq!(
            e.observe("r", "/hls/a", first, "/hls/a/i.m3u8", 0, td),
            None
        );
        assert_eq!(
            e.observe("r", "/hls/a", second, "/hls/a/i.m3u8", 1, td),
            None
        );
    }
}
