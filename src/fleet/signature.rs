//! The fleet's pass for gateway-to-gateway pulls.
//!
//! A gateway pulling from another sends two headers:
//! - `X-Streamgate-Hop: N`: how many gateway hops are behind this request (1 for a pull made
//!   for viewers, N+1 for one made to serve a request that came at hop N);
//! - `X-Streamgate-Fleet: ID.TS.SIG`: the sender's id, its Unix time, and
//!   `SIG = hex(HMAC-SHA256(secret, "ID\nTS\nHOP\nPATH"))`.
//!
//! The receiving gateway skips the route's viewer auth (a browser's token, signature or hook)
//! for a request whose pass verifies, compared in constant time with the one compare of the
//! codebase (`auth::ct_eq`), within [`MAX_SKEW`] of its own clock. The pass binds the path and
//! the hop, so it cannot be moved to another stream or used to lower the hop count, and it
//! expires, so a copied header is of no use for long. The hop header is believed only with a
//! valid pass: a viewer cannot push a gateway into pulling from the node.

use http::{HeaderMap, HeaderValue};

use crate::auth::ct_eq;
use crate::auth::signed::mac;
use crate::error::GatewayError;

pub const HOP_HEADER: &str = "x-streamgate-hop";
pub const PASS_HEADER: &str = "x-streamgate-fleet";
/// The query parameter a fleet redirect adds: the target serves, never redirects again.
pub const HOP_PARAM: &str = "sg_hop";
/// How far a pass's time may be from the receiver's clock.
pub const MAX_SKEW: u64 = 300;

fn message(id: &str, ts: u64, hop: u8, path: &str) -> String {
    format!("{id}\n{ts}\n{hop}\n{path}")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The pass for a pull of `path` at `hop` by gateway `id` at Unix time `now`.
pub fn sign(secret: &str, id: &str, now: u64, hop: u8, path: &str) -> String {
    let sig = mac(secret.as_bytes(), message(id, now, hop, path).as_bytes());
    format!("{id}.{now}.{}", hex(&sig))
}

/// What a verified pass says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pass {
    /// The gateway that sent it.
    pub from: String,
    pub hop: u8,
}

/// Checks a request's pass: `Ok(None)` without one, `Err(Unauthorized)` when it is forged,
/// expired, for another path, or comes without a readable hop.
pub fn verify(
    secret: &str,
    headers: &HeaderMap,
    path: &str,
    now: u64,
) -> Result<Option<Pass>, GatewayError> {
    let Some(pass) = headers.get(PASS_HEADER) else {
        return Ok(None);
    };
    let pass = pass.to_str().map_err(|_| GatewayError::Unauthorized)?;
    let hop: u8 = headers
        .get(HOP_HEADER)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.trim().parse().ok())
        .ok_or(GatewayError::Unauthorized)?;
    // The id may contain '.', the time and signature cannot: split from the right.
    let mut parts = pass.rsplitn(3, '.');
    let (Some(sig), Some(ts), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(GatewayError::Unauthorized);
    };
    let ts: u64 = ts.parse().map_err(|_| GatewayError::Unauthorized)?;
    let want = hex(&mac(
        secret.as_bytes(),
        message(id, ts, hop, path).as_bytes(),
    ));
    if !ct_eq(want.as_bytes(), sig.as_bytes()) || now.abs_diff(ts) > MAX_SKEW {
        return Err(GatewayError::Unauthorized);
    }
    Ok(Some(Pass {
        from: id.to_string(),
        hop,
    }))
}

/// The two headers of a pull, as (name, value) pairs.
pub fn headers(
    secret: &str,
    id: &str,
    now: u64,
    hop: u8,
    path: &str,
) -> Vec<(&'static str, HeaderValue)> {
    let mut v = vec![(HOP_HEADER, HeaderValue::from(u16::from(hop)))];
    if let Ok(p) = HeaderValue::from_str(&sign(secret, id, now, hop, path)) {
        v.push((PASS_HEADER, p));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "fleet-secret-0123456789";

    fn map(pairs: Vec<(&'static str, HeaderValue)>) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k, v);
        }
        h
    }

    #[test]
    fn a_pass_is_bound_to_path_hop_time_and_secret() {
        let h = map(headers(S, "gw.a", 1_000, 1, "/flv/s.flv"));
        assert_eq!(
            verify(S, &h, "/flv/s.flv", 1_010).expect("valid"),
            Some(Pass {
                from: "gw.a".into(),
                hop: 1
            })
        );
        assert!(
            verify(S, &h, "/flv/other.flv", 1_010).is_err(),
            "other path"
        );
        assert!(verify("another-secret-0123", &h, "/flv/s.flv", 1_010).is_err());
        assert!(
            verify(S, &h, "/flv/s.flv", 1_000 + MAX_SKEW + 1).is_err(),
            "expired"
        );
        let mut lowered = h.clone();
        lowered.insert(HOP_HEADER, HeaderValue::from_static("0"));
        assert!(
            verify(S, &lowered, "/flv/s.flv", 1_010).is_err(),
            "hop is signed"
        );
        assert_eq!(
            verify(S, &HeaderMap::new(), "/flv/s.flv", 1_010).expect("none"),
            None
        );
        let mut no_hop = h;
        no_hop.remove(HOP_HEADER);
        assert!(verify(S, &no_hop, "/flv/s.flv", 1_010).is_err());
    }
}
