//! Building the address a request goes to: a node's base URL, the rendered upstream path and the
//! viewer's query minus credentials. Everything here works on already-validated pieces, so the
//! host always comes from config or the registry, never from the request.

use percent_encoding::percent_decode_str;

/// Query parameters that carry viewer credentials and never leave the gateway: the viewer token,
/// the viewer JWT (`jwt`), the signed-URL parameters (native `expires`, `kid`, `prefix`, `ip`,
/// `sign`; nginx `secure_link`'s `md5` and `expires`) and the gateway's HLS session parameters
/// (`hls_s`, `hls_e`, `hls_sig`, see `auth::session`).
pub const CREDENTIAL_PARAMS: &[&str] = &[
    "token", "expires", "sign", "kid", "prefix", "ip", "md5", "jwt", "hls_s", "hls_e", "hls_sig",
];

/// The media-server hooks' shared secret (`?secret=`): never logged, besides the credentials.
const HOOK_SECRET_PARAM: &str = "secret";

/// `scheme://authority` plus an optional path prefix, parsed once at config time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`, as written.
    pub authority: String,
    /// Path prefix without a trailing slash (empty for none).
    pub prefix: String,
}

impl BaseUrl {
    /// Parses `http(s)://host[:port][/prefix]`; no query, fragment or user info.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| "must start with http:// or https://".to_string())?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err("scheme must be http or https".into());
        }
        if rest.contains(['?', '#', '@', '\\']) || rest.chars().any(|c| c.is_control() || c == ' ')
        {
            return Err("no query, fragment, user info or spaces allowed".into());
        }
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err("missing host".into());
        }
        let uri: http::Uri = format!("{scheme}://{authority}/")
            .parse()
            .map_err(|_| "invalid host or port".to_string())?;
        if uri.host().is_none_or(str::is_empty) {
            return Err("missing host".into());
        }
        Ok(Self {
            scheme,
            authority: authority.to_ascii_lowercase(),
            prefix: prefix.to_string(),
        })
    }

    /// `scheme://authority`, the part that decides the origin.
    pub fn origin(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }

    /// Full URL for `path` (which starts with `/`) and an optional query.
    pub fn join(&self, path: &str, query: Option<&str>) -> String {
        let mut s = String::with_capacity(
            self.scheme.len()
                + 3
                + self.authority.len()
                + self.prefix.len()
                + path.len()
                + query.map_or(0, |q| q.len() + 1),
        );
        s.push_str(&self.scheme);
        s.push_str("://");
        s.push_str(&self.authority);
        s.push_str(&self.prefix);
        s.push_str(path);
        if let Some(q) = query {
            s.push('?');
            s.push_str(q);
        }
        s
    }
}

/// The query with credential parameters removed; every other parameter kept raw and in order.
/// Returns `None` when nothing remains.
pub fn strip_credentials(query: Option<&str>) -> Option<String> {
    strip_params(query, |k| is_one_of(k, CREDENTIAL_PARAMS))
}

/// The query as the access log may show it: without credentials nor the hooks' secret.
pub fn strip_secrets(query: Option<&str>) -> Option<String> {
    strip_params(query, |k| {
        is_one_of(k, CREDENTIAL_PARAMS) || k.eq_ignore_ascii_case(HOOK_SECRET_PARAM)
    })
}

fn is_one_of(key: &str, names: &[&str]) -> bool {
    names.iter().any(|c| key.eq_ignore_ascii_case(c))
}

/// The query without the parameters whose (percent-decoded) key `drop` names.
fn strip_params(query: Option<&str>, drop: impl Fn(&str) -> bool) -> Option<String> {
    let q = query?;
    let kept: Vec<&str> = q
        .split('&')
        .filter(|pair| {
            if pair.is_empty() {
                return false;
            }
            let key = pair.split('=').next().unwrap_or("");
            let key = key.replace('+', " ");
            let decoded = percent_decode_str(&key).decode_utf8_lossy();
            !drop(&decoded)
        })
        .collect();
    if kept.is_empty() {
        None
    } else {
        Some(kept.join("&"))
    }
}

/// The value of query parameter `name` (first occurrence, percent-decoded).
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode_str(&k.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned();
        (k == name).then(|| {
            percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_parsing() {
        let b = BaseUrl::parse("http://127.0.0.1:9001").expect("ok");
        assert_eq!(b.origin(), "http://127.0.0.1:9001");
        assert_eq!(b.join("/x", Some("a=1")), "http://127.0.0.1:9001/x?a=1");
        let b = BaseUrl::parse("https://CDN.example.com/base/").expect("ok");
        assert_eq!(b.join("/x", None), "https://cdn.example.com/base/x");
        assert!(BaseUrl::parse("ftp://x").is_err());
        assert!(BaseUrl::parse("http://").is_err());
        assert!(BaseUrl::parse("http://a@b").is_err());
        assert!(BaseUrl::parse("http://a/b?c").is_err());
        assert!(BaseUrl::parse("127.0.0.1:80").is_err());
    }

    #[test]
    fn credentials_leave_and_the_rest_stays_in_order() {
        assert_eq!(
            strip_credentials(Some("b=2&token=s3cret&a=1&a=0")).as_deref(),
            Some("b=2&a=1&a=0")
        );
        assert_eq!(strip_credentials(Some("token=x")), None);
        assert_eq!(
            strip_credentials(Some("%74oken=x&k=%20v")).as_deref(),
            Some("k=%20v")
        );
        assert_eq!(strip_credentials(Some("TOKEN=x&&z")).as_deref(), Some("z"));
        assert_eq!(strip_credentials(None), None);
        assert_eq!(
            strip_credentials(Some(
                "a=1&expires=1&kid=k1&prefix=/x/&ip=1.2.3.4&sign=ab&md5=cd&b=2"
            ))
            .as_deref(),
            Some("a=1&b=2")
        );
        assert_eq!(
            strip_secrets(Some("sign=ab&secret=h&md5=x&jwt=e.y.s&q=1")).as_deref(),
            Some("q=1")
        );
        assert_eq!(
            strip_secrets(Some("hls_s=a1&x=2&hls_e=9&HLS_SIG=ff")).as_deref(),
            Some("x=2")
        );
    }

    #[test]
    fn session_parameters_are_credentials() {
        for p in crate::auth::session::PARAMS {
            assert!(CREDENTIAL_PARAMS.contains(&p), "{p}");
        }
    }

    #[test]
    fn query_param_decodes() {
        assert_eq!(
            query_param(Some("a=1&token=s%33cret"), "token").as_deref(),
            Some("s3cret")
        );
        assert_eq!(query_param(Some("a=1"), "token"), None);
    }
}
