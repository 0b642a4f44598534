//! nginx `secure_link` compatibility (`auth = "secure_link"`, and `sign_location` on redirect
//! routes): `?md5=<base64url, no padding, of MD5 over an expression>&expires=<unix>`, exactly as
//! nginx computes it for
//!
//! ```nginx
//! secure_link     $arg_md5,$arg_expires;
//! secure_link_md5 "$secure_link_expires$uri$remote_addr secret";
//! ```
//!
//! so an operator's existing signer keeps working, and a stock nginx verifies the `Location`s we
//! sign. As in nginx: a wrong or malformed `md5`, or a missing or non-positive `expires`, is
//! forged (`$secure_link` = "", here 403 `signature_invalid`); a genuine link whose `expires`
//! is in the past is expired (`$secure_link` = "0", here 403 `signature_expired`).

use md5::{Digest, Md5};

use super::ct_eq;
use super::signed::parse_unix;
use crate::error::GatewayError;
use crate::upstream_path::{query_param, BaseUrl};

/// One piece of the expression.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Vec<u8>),
    /// `$secure_link_expires`: the `expires` argument as written.
    Expires,
    /// `$uri`: the path, percent-decoded, slashes merged (nginx's normalised URI).
    Uri,
    /// `$remote_addr`: the client's address.
    RemoteAddr,
    /// `$host`: the host name, lowercased, without the port.
    Host,
    /// `$arg_NAME`: the raw (not decoded) value of query argument NAME, "" when absent.
    Arg(String),
}

/// The variables that the expression may use.
pub const VARIABLES: &str = "$secure_link_expires, $uri, $remote_addr, $host, $arg_NAME";

/// A compiled `secure_link_md5` expression.
#[derive(Clone, PartialEq, Eq)]
pub struct SecureLink {
    parts: Vec<Part>,
}

impl std::fmt::Debug for SecureLink {
    // The expression holds the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecureLink(<redacted>)")
    }
}

/// What the expression is evaluated against.
#[derive(Debug, Clone, Copy)]
pub struct Vars<'a> {
    /// The `expires` value as written in the URL.
    pub expires: &'a str,
    /// The request path as in the URL (still percent-encoded); normalised for `$uri`.
    pub path: &'a str,
    /// The client's address, as nginx prints it.
    pub remote_addr: &'a str,
    /// The host (with or without port; the port is dropped).
    pub host: &'a str,
    /// The raw query, for `$arg_NAME`.
    pub query: Option<&'a str>,
}

impl SecureLink {
    /// Compiles an nginx-style expression. `$name` or `${name}`; an unknown variable is an
    /// error naming it.
    pub fn parse(expr: &str) -> Result<Self, String> {
        let b = expr.as_bytes();
        let mut parts = Vec::new();
        let mut lit = Vec::new();
        let mut i = 0;
        let is_name = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
        while i < b.len() {
            if b[i] != b'$' {
                lit.push(b[i]);
                i += 1;
                continue;
            }
            let (name, next) = if b.get(i + 1) == Some(&b'{') {
                let end = expr[i + 2..]
                    .find('}')
                    .map(|e| i + 2 + e)
                    .ok_or_else(|| "unclosed \"${\"".to_string())?;
                (&expr[i + 2..end], end + 1)
            } else {
                let len = b[i + 1..].iter().take_while(|&&c| is_name(c)).count();
                (&expr[i + 1..i + 1 + len], i + 1 + len)
            };
            if name.is_empty() || !name.bytes().all(is_name) {
                return Err(format!("invalid variable name after '$' at byte {i}"));
            }
            let part = match name {
                "secure_link_expires" => Part::Expires,
                "uri" => Part::Uri,
                "remote_addr" => Part::RemoteAddr,
                "host" => Part::Host,
                n if n.len() > 4 && n.starts_with("arg_") => Part::Arg(n[4..].to_string()),
                n => return Err(format!("unknown variable ${n} (supported: {VARIABLES})")),
            };
            if !lit.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut lit)));
            }
            parts.push(part);
            i = next;
        }
        if !lit.is_empty() {
            parts.push(Part::Literal(lit));
        }
        Ok(Self { parts })
    }

    /// MD5 over the evaluated expression.
    pub fn digest(&self, v: &Vars<'_>) -> [u8; 16] {
        let mut h = Md5::new();
        for p in &self.parts {
            match p {
                Part::Literal(l) => h.update(l),
                Part::Expires => h.update(v.expires.as_bytes()),
                Part::Uri => h.update(nginx_uri(v.path)),
                Part::RemoteAddr => h.update(v.remote_addr.as_bytes()),
                Part::Host => h.update(host_name(v.host).as_bytes()),
                Part::Arg(name) => h.update(raw_arg(v.query, name).unwrap_or("").as_bytes()),
            }
        }
        h.finalize().into()
    }

    /// The `md5=` value for `v`.
    pub fn token(&self, v: &Vars<'_>) -> String {
        base64url(&self.digest(v))
    }

    /// Checks `md5` and `expires` from `v.query` at unix time `now`, as nginx's
    /// `secure_link $arg_md5,$arg_expires` does. `v.expires` is ignored (it comes from the query).
    pub fn verify(&self, v: &Vars<'_>, now: u64) -> Result<(), GatewayError> {
        let invalid = || GatewayError::SignatureInvalid;
        let md5 = query_param(v.query, "md5").ok_or_else(invalid)?;
        let expires_text = query_param(v.query, "expires").ok_or_else(invalid)?;
        let expires = parse_unix(&expires_text).ok_or_else(invalid)?;
        let presented = unbase64url16(&md5).ok_or_else(invalid)?;
        let want = self.digest(&Vars {
            expires: &expires_text,
            ..*v
        });
        if !ct_eq(&want, &presented) {
            return Err(invalid());
        }
        if expires < now {
            return Err(GatewayError::SignatureExpired);
        }
        Ok(())
    }
}

impl SecureLink {
    /// The query for a `Location` at `base` + `path` that a stock nginx with
    /// `secure_link $arg_md5,$arg_expires` and this expression accepts until `expires`, when
    /// followed from `remote_addr`: `query` (if any), then `expires=…&md5=…`. `$host` is the
    /// base URL's host and `$uri` includes its path prefix, as nginx will see them.
    pub fn sign_location(
        &self,
        base: &BaseUrl,
        path: &str,
        query: Option<&str>,
        remote_addr: &str,
        expires: u64,
    ) -> String {
        let expires_text = expires.to_string();
        let mut q = match query {
            Some(q) => format!("{q}&expires={expires_text}"),
            None => format!("expires={expires_text}"),
        };
        let full_path = format!("{}{path}", base.prefix);
        let md5 = self.token(&Vars {
            expires: &expires_text,
            path: &full_path,
            remote_addr,
            host: &base.authority,
            query: Some(&q),
        });
        q.push_str("&md5=");
        q.push_str(&md5);
        q
    }
}

/// nginx's `$uri` for a raw path: `%XX` decoded and runs of `/` merged (`merge_slashes on`).
/// Dot segments never get here: the router refuses them.
pub fn nginx_uri(path: &str) -> Vec<u8> {
    let decoded: Vec<u8> = percent_encoding::percent_decode_str(path).collect();
    let mut out = Vec::with_capacity(decoded.len());
    for c in decoded {
        if c == b'/' && out.last() == Some(&b'/') {
            continue;
        }
        out.push(c);
    }
    out
}

/// nginx's `$host` from a `Host` value: lowercased, port dropped (`[v6]` brackets kept).
pub fn host_name(host: &str) -> String {
    let h = if host.starts_with('[') {
        host.find(']').map_or(host, |e| &host[..=e])
    } else {
        host.split(':').next().unwrap_or("")
    };
    h.to_ascii_lowercase()
}

/// nginx's `$arg_NAME`: the first argument named `name` (case-insensitive), value undecoded.
fn raw_arg<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        k.eq_ignore_ascii_case(name).then_some(v)
    })
}

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// base64url without padding (RFC 4648 §5), as nginx's `secure_link` expects.
pub fn base64url(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            s.push(B64URL[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    s
}

/// Decodes a 16-byte MD5 from base64url the way nginx does: input ends at the first `=`, every
/// other character must be in the url-safe alphabet, and it must decode to exactly 16 bytes.
fn unbase64url16(s: &str) -> Option<[u8; 16]> {
    let s = s.split('=').next().unwrap_or("");
    if s.len() != 22 {
        return None;
    }
    let mut acc: u32 = 0;
    let mut bits = 0;
    let mut out = [0u8; 16];
    let mut n = 0;
    for c in s.bytes() {
        let v = B64URL.iter().position(|&x| x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out[n] = (acc >> bits) as u8;
            n += 1;
            acc &= (1 << bits) - 1;
        }
    }
    (n == 16).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPR: &str = "$secure_link_expires$uri$remote_addr secret";

    /// `printf '%s' INPUT | openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =`
    fn openssl_token(input: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg("printf '%s' \"$1\" | openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =")
            .arg("sh")
            .arg(input)
            .output()
            .expect("sh and openssl run");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn vars<'a>(expires: &'a str, path: &'a str, query: Option<&'a str>) -> Vars<'a> {
        Vars {
            expires,
            path,
            remote_addr: "127.0.0.1",
            host: "Media.Example:8080",
            query,
        }
    }

    #[test]
    fn matches_nginx_published_algorithm() {
        let sl = SecureLink::parse(EXPR).expect("parse");
        let v = vars("2147483647", "/s/link", None);
        // Fixed vector, computed by hand with the pipeline above.
        assert_eq!(
            sl.token(&v),
            openssl_token("2147483647/s/link127.0.0.1 secret")
        );
        assert_eq!(sl.token(&v), "_e4Nc3iduzkWRm01TBBNYw");
        let v = vars("1700000000", "/a%20b//c.ts", Some("x=%41&expires=1"));
        let all = SecureLink::parse("${host}|$arg_x|$arg_missing|$uri|s").expect("parse");
        assert_eq!(
            all.token(&v),
            openssl_token("media.example|%41||/a b/c.ts|s")
        );
    }

    #[test]
    fn expression_errors_name_the_variable() {
        let e = SecureLink::parse("$secure_link_expires$request_uri s").expect_err("unknown");
        assert!(e.contains("$request_uri"), "{e}");
        assert!(SecureLink::parse("a $ b").is_err());
        assert!(SecureLink::parse("${uri").is_err());
        assert!(SecureLink::parse("$arg_").is_err());
        assert!(SecureLink::parse("no variables at all").is_ok());
    }

    #[test]
    fn verify_like_nginx() {
        let sl = SecureLink::parse(EXPR).expect("parse");
        let now = 1_800_000_000u64;
        let md5 = openssl_token(&format!("{now}/v/a.mp4127.0.0.1 secret"));
        let q = format!("md5={md5}&expires={now}");
        assert!(sl.verify(&vars("", "/v/a.mp4", Some(&q)), now).is_ok());
        assert!(matches!(
            sl.verify(&vars("", "/v/a.mp4", Some(&q)), now + 1),
            Err(GatewayError::SignatureExpired)
        ));
        assert!(matches!(
            sl.verify(&vars("", "/v/b.mp4", Some(&q)), now),
            Err(GatewayError::SignatureInvalid)
        ));
        // nginx accepts the padded form too (decoding stops at '=').
        let padded = format!("md5={md5}==&expires={now}");
        assert!(sl.verify(&vars("", "/v/a.mp4", Some(&padded)), now).is_ok());
        for bad in [
            format!("md5={md5}"),
            format!("md5={md5}&expires=0"),
            format!("md5={md5}&expires=-5"),
            format!("md5={}&expires={now}", &md5[..21]),
            format!("md5={}+&expires={now}", &md5[..21]),
            format!("expires={now}"),
        ] {
            assert!(
                matches!(
                    sl.verify(&vars("", "/v/a.mp4", Some(&bad)), now),
                    Err(GatewayError::SignatureInvalid)
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_signed_location_verifies() {
        let sl =
            SecureLink::parse("$secure_link_expires$uri$host$arg_a$remote_addr s").expect("parse");
        let base = BaseUrl::parse("http://Node.Example:8081/base").expect("url");
        let q = sl.sign_location(
            &base,
            "/f/x%20y.mp4",
            Some("a=1"),
            "10.0.0.9",
            1_900_000_000,
        );
        assert!(q.starts_with("a=1&expires=1900000000&md5="), "{q}");
        let md5 = q.rsplit("md5=").next().unwrap_or("");
        assert_eq!(
            md5,
            openssl_token("1900000000/base/f/x y.mp4node.example110.0.0.9 s")
        );
    }

    #[test]
    fn base64url_round_trip() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        let d: [u8; 16] = core::array::from_fn(|i| (i * 17) as u8);
        assert_eq!(unbase64url16(&base64url(&d)), Some(d));
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("A.b"), "a.b");
    }
}
