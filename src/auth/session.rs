//! HLS sessions (`hls_session = true` on a proxy route): one credential check covers a whole
//! HLS playback. When a viewer passes the route's `auth` on a playlist, the gateway opens a
//! session and rewrites the playlist so every URI it serves (segments, keys, maps, parts, child
//! playlists) carries a signature of the gateway's own:
//!
//! ```text
//! seg12.ts?hls_s=<session id>&hls_e=<unix expiry>&hls_sig=<32 hex>
//! ```
//!
//! `hls_sig` is the first 16 bytes (in hex) of HMAC-SHA256, keyed with the session key, over
//!
//! ```text
//! hls-session\n{session id}\n{hls_e}\n{path}\n{ip}
//! ```
//!
//! where `path` is the exact request path the URI resolves to (as the player will send it,
//! percent-encoded) and `ip` is the viewer's address with `bind_ip`, else empty. A request
//! carrying a valid signature for its own path skips the route's auth (no hook call, and the
//! play token may have expired long ago); the parameters are credentials, so they never reach
//! a node or the access log.
//!
//! **Lifetimes.** Players reload a live playlist at the very URL they first got it from, so a
//! playlist URL cannot be renewed: child-playlist URIs carry the session's end (`max_age` after
//! the credential check), and a media playlist fetched with the viewer's credentials is answered
//! with a redirect to its own session URL. Segment URIs are what slides: each playlist fetch
//! issues them anew, valid `ttl` from then (rounded up to [`ROUND`] seconds, so a playlist's
//! URIs stay identical from one reload to the next, as LL-HLS preload hints want), plus the
//! playlist's duration when it is a finished (VOD) one, never past the session's end. A URL never
//! issues one that outlives it.
//!
//! Signing a path rather than a prefix keeps a session to what the node's playlists list: with
//! SRS's default layout (`/live/cam1.m3u8`, `/live/cam1-12.ts`) a prefix would have been
//! `/live/`, every stream of the application.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use super::ct_eq;
use super::signed::{hex, mac, parse_unix};
use crate::config::HlsSessionSettings;
use crate::error::GatewayError;
use crate::upstream_path::query_param;

/// The session id parameter.
pub const ID_PARAM: &str = "hls_s";
/// The expiry parameter (Unix seconds; valid up to and including that second).
pub const EXPIRES_PARAM: &str = "hls_e";
/// The signature parameter.
pub const SIG_PARAM: &str = "hls_sig";
/// Every session parameter: credentials, like `token` or `sign`.
pub const PARAMS: [&str; 3] = [ID_PARAM, EXPIRES_PARAM, SIG_PARAM];

/// Segment URL expiries are rounded up to a multiple of this many seconds.
pub const ROUND: u64 = 30;

/// Bytes of the HMAC kept in `hls_sig`: 128 bits, plenty for a URL that lives minutes.
const SIG_BYTES: usize = 16;

/// Issues and checks session signatures with one key.
#[derive(Clone)]
pub struct HlsSessions {
    /// The HMAC key: configured, or drawn at start.
    key: Vec<u8>,
    /// Segment URL lifetime, seconds.
    ttl: u64,
    /// Session lifetime, seconds.
    max_age: u64,
    bind_ip: bool,
}

impl std::fmt::Debug for HlsSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HlsSessions")
            .field("key", &"<redacted>")
            .field("ttl", &self.ttl)
            .field("max_age", &self.max_age)
            .field("bind_ip", &self.bind_ip)
            .finish()
    }
}

impl Default for HlsSessions {
    fn default() -> Self {
        Self::new(&HlsSessionSettings::default())
    }
}

/// The session a request belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Names the session in the access log (`session=`); not a secret.
    pub id: String,
    /// Nothing issued under this session outlives this Unix time: the session's end for a new
    /// session, the presented URL's own `hls_e` for a request that came with one.
    pub end: u64,
}

impl HlsSessions {
    pub fn new(s: &HlsSessionSettings) -> Self {
        Self {
            key: s.secret.clone().unwrap_or_else(random_key),
            ttl: s.ttl.as_secs(),
            max_age: s.max_age.as_secs(),
            bind_ip: s.bind_ip,
        }
    }

    /// A new session, opened at `now` by a request that passed the route's auth.
    pub fn open(&self, now: u64) -> Session {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let seed = format!("session-id\n{}\n{n}\n{now}", std::process::id());
        Session {
            id: hex(&mac(&self.key, seed.as_bytes())[..8]),
            end: now.saturating_add(self.max_age),
        }
    }

    /// The session of a request for `path` from `peer` at `now`: `Ok(None)` when it carries no
    /// session parameter, the session when its signature is genuine and current; 403
    /// `session_invalid` when forged, incomplete or for another path or address, 403
    /// `session_expired` when genuine but past its `hls_e`.
    pub fn check(
        &self,
        path: &str,
        query: Option<&str>,
        peer: IpAddr,
        now: u64,
    ) -> Result<Option<Session>, GatewayError> {
        let id = query_param(query, ID_PARAM);
        let expires = query_param(query, EXPIRES_PARAM);
        let sig = query_param(query, SIG_PARAM);
        let (id, expires, sig) = match (id, expires, sig) {
            (None, None, None) => return Ok(None),
            (Some(i), Some(e), Some(s)) => (i, e, s),
            _ => return Err(GatewayError::SessionInvalid),
        };
        let expires = parse_unix(&expires).ok_or(GatewayError::SessionInvalid)?;
        if !valid_id(&id) {
            return Err(GatewayError::SessionInvalid);
        }
        let want = self.sig(&id, path, expires, peer);
        if !ct_eq(want.as_bytes(), sig.to_ascii_lowercase().as_bytes()) {
            return Err(GatewayError::SessionInvalid);
        }
        if expires < now {
            return Err(GatewayError::SessionExpired);
        }
        Ok(Some(Session { id, end: expires }))
    }

    /// When a segment URL issued at `now` expires: `ttl` (plus `extra`, a VOD playlist's
    /// duration) rounded up to [`ROUND`] seconds, and never after the session's end.
    pub fn media_expiry(&self, session: &Session, now: u64, extra: u64) -> u64 {
        let t = now.saturating_add(self.ttl).saturating_add(extra);
        let rounded = t.div_ceil(ROUND).saturating_mul(ROUND);
        rounded.min(session.end)
    }

    /// The query parameters (`hls_s=…&hls_e=…&hls_sig=…`) that admit `peer` to `path` under
    /// `session` until `expires`.
    pub fn query(&self, session: &Session, path: &str, expires: u64, peer: IpAddr) -> String {
        format!(
            "{ID_PARAM}={}&{EXPIRES_PARAM}={expires}&{SIG_PARAM}={}",
            session.id,
            self.sig(&session.id, path, expires, peer)
        )
    }

    fn sig(&self, id: &str, path: &str, expires: u64, peer: IpAddr) -> String {
        let ip = if self.bind_ip {
            peer.to_canonical().to_string()
        } else {
            String::new()
        };
        let msg = format!("hls-session\n{id}\n{expires}\n{path}\n{ip}");
        hex(&mac(&self.key, msg.as_bytes())[..SIG_BYTES])
    }
}

/// Session ids are what [`HlsSessions::open`] makes: short, plain, safe in a log line.
fn valid_id(id: &str) -> bool {
    (1..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// 32 bytes from the kernel's CSPRNG. Should `/dev/urandom` be unreadable, the standard
/// library's OS-seeded hasher keys stand in (logged), rather than refusing to start.
fn random_key() -> Vec<u8> {
    use std::io::Read;
    let mut key = vec![0u8; 32];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut key)) {
        Ok(()) => key,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read /dev/urandom; HLS session key from the hasher seed");
            use std::hash::{BuildHasher, Hasher};
            let mut out = Vec::with_capacity(32);
            for i in 0..4u8 {
                let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                h.write_u8(i);
                h.write_u128(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos()),
                );
                out.extend_from_slice(&h.finish().to_le_bytes());
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const NOW: u64 = 1_800_000_000;

    fn sessions(bind_ip: bool) -> HlsSessions {
        HlsSessions::new(&HlsSessionSettings {
            secret: Some(b"session-secret-0123456789".to_vec()),
            ttl: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
            bind_ip,
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_signed_path_is_admitted_until_its_expiry() {
        let s = sessions(false);
        let sess = s.open(NOW);
        assert_eq!(sess.end, NOW + 3600);
        assert_eq!(sess.id.len(), 16);
        assert_ne!(s.open(NOW).id, sess.id, "ids differ");
        let q = s.query(&sess, "/hls/cam1/seg1.ts", NOW + 60, ip("10.0.0.1"));
        assert!(q.starts_with(&format!("hls_s={}&hls_e={}&hls_sig=", sess.id, NOW + 60)));
        let path = "/hls/cam1/seg1.ts";
        let got = s
            .check(path, Some(&format!("x=1&{q}")), ip("10.0.0.2"), NOW + 60)
            .expect("valid")
            .expect("a session");
        assert_eq!(
            got,
            Session {
                id: sess.id.clone(),
                end: NOW + 60
            }
        );
        // Up to and including the second hls_e; expired from the next.
        assert!(matches!(
            s.check(path, Some(&q), ip("10.0.0.2"), NOW + 61),
            Err(GatewayError::SessionExpired)
        ));
        // Upper-case hex is the same signature.
        let upper = q.replace(&q[q.len() - 32..], &q[q.len() - 32..].to_ascii_uppercase());
        assert!(s.check(path, Some(&upper), ip("10.0.0.2"), NOW).is_ok());
    }

    #[test]
    fn no_parameters_is_no_session() {
        let s = sessions(false);
        assert_eq!(s.check("/a", None, ip("10.0.0.1"), NOW).expect("ok"), None);
        assert_eq!(
            s.check("/a", Some("token=x&expires=1"), ip("10.0.0.1"), NOW)
                .expect("ok"),
            None
        );
    }

    #[test]
    fn forged_misplaced_or_incomplete_is_invalid() {
        let s = sessions(false);
        let sess = s.open(NOW);
        let q = s.query(&sess, "/hls/cam1/seg1.ts", NOW + 60, ip("10.0.0.1"));
        let other_key = HlsSessions::new(&HlsSessionSettings {
            secret: Some(b"another-secret-0123456789".to_vec()),
            ..HlsSessionSettings::default()
        });
        let bad = |path: &str, query: &str| {
            matches!(
                s.check(path, Some(query), ip("10.0.0.1"), NOW),
                Err(GatewayError::SessionInvalid)
            )
        };
        assert!(bad("/hls/cam1/seg2.ts", &q), "another path");
        assert!(bad("/hls/cam10/seg1.ts", &q), "another stream");
        assert!(bad(
            "/hls/cam1/seg1.ts",
            &q.replace(
                &format!("hls_e={}", NOW + 60),
                &format!("hls_e={}", NOW + 9999)
            )
        ));
        assert!(bad(
            "/hls/cam1/seg1.ts",
            &q.replace(&sess.id, "0123456789abcdef")
        ));
        assert!(bad("/hls/cam1/seg1.ts", &format!("hls_s={}", sess.id)));
        assert!(bad("/hls/cam1/seg1.ts", "hls_sig=00"));
        assert!(bad("/hls/cam1/seg1.ts", "hls_s=a&hls_e=x&hls_sig=00"));
        assert!(bad("/hls/cam1/seg1.ts", "hls_s=a%20b&hls_e=1&hls_sig=00"));
        let foreign = other_key.query(&sess, "/hls/cam1/seg1.ts", NOW + 60, ip("10.0.0.1"));
        assert!(bad("/hls/cam1/seg1.ts", &foreign), "another key");
        // A forged signature is invalid even when its expiry is past.
        let old = q.replace(
            &format!("hls_e={}", NOW + 60),
            &format!("hls_e={}", NOW - 5),
        );
        assert!(bad("/hls/cam1/seg1.ts", &old));
    }

    #[test]
    fn bind_ip_ties_a_session_to_the_viewer() {
        let s = sessions(true);
        let sess = s.open(NOW);
        let q = s.query(&sess, "/a.ts", NOW + 60, ip("203.0.113.7"));
        assert!(s.check("/a.ts", Some(&q), ip("203.0.113.7"), NOW).is_ok());
        assert!(
            s.check("/a.ts", Some(&q), ip("::ffff:203.0.113.7"), NOW)
                .is_ok(),
            "an IPv4-mapped peer is its IPv4 address"
        );
        assert!(matches!(
            s.check("/a.ts", Some(&q), ip("203.0.113.8"), NOW),
            Err(GatewayError::SessionInvalid)
        ));
        // Without bind_ip the address is not part of the signature.
        let s = sessions(false);
        let q = s.query(&sess, "/a.ts", NOW + 60, ip("203.0.113.7"));
        assert!(s.check("/a.ts", Some(&q), ip("198.51.100.1"), NOW).is_ok());
    }

    #[test]
    fn segment_expiry_rounds_up_and_stops_at_the_session_end() {
        let s = sessions(false);
        let sess = Session {
            id: "a".into(),
            end: NOW + 3600,
        };
        // NOW is a multiple of 30: NOW + 60 stays; one second later rounds up to NOW + 90.
        assert_eq!(NOW % ROUND, 0);
        assert_eq!(s.media_expiry(&sess, NOW, 0), NOW + 60);
        assert_eq!(s.media_expiry(&sess, NOW + 1, 0), NOW + 90);
        assert_eq!(s.media_expiry(&sess, NOW + 29, 0), NOW + 90);
        // A VOD playlist's duration on top, capped by the session's end.
        assert_eq!(s.media_expiry(&sess, NOW, 600), NOW + 660);
        assert_eq!(s.media_expiry(&sess, NOW, 100_000), NOW + 3600);
        let ending = Session {
            id: "a".into(),
            end: NOW + 10,
        };
        assert_eq!(s.media_expiry(&ending, NOW, 0), NOW + 10);
    }

    #[test]
    fn a_random_key_differs_per_gateway() {
        let a = HlsSessions::default();
        let b = HlsSessions::default();
        assert_eq!(a.key.len(), 32);
        assert_ne!(a.key, b.key);
        let sess = a.open(NOW);
        let q = a.query(&sess, "/a.ts", NOW + 60, ip("10.0.0.1"));
        assert!(matches!(
            b.check("/a.ts", Some(&q), ip("10.0.0.1"), NOW),
            Err(GatewayError::SessionInvalid)
        ));
    }
}
