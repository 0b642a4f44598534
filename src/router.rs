//! Path patterns (`/flv/{stream}.flv`, `/vod/{*rest}`) → route, and upstream templates.
//!
//! Matching works on the raw (still percent-encoded) path so an encoded slash can never become a
//! path separator. Captures are then checked: `{stream}` must be a plain stream name, and any
//! other capture must not climb (`..`), smuggle a separator (`%2F`, `%5C`, `\`) or a NUL.

use std::sync::Arc;

use percent_encoding::percent_decode_str;

use crate::error::GatewayError;

/// The capture name that selects a node through the stream registry.
pub const STREAM: &str = "stream";
/// The capture holding an application (namespace) name: with it, the registry key is
/// `app/stream` (`[registry] key = "app/stream"`).
pub const APP: &str = "app";

/// Capture names are shared with every match's [`Captures`] (a match copies no name).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Literal(String),
    Param {
        prefix: String,
        name: Arc<str>,
        suffix: String,
    },
    Rest(Arc<str>),
}

/// A compiled route path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    segs: Vec<Seg>,
}

fn valid_var(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A registry key: a stream name, or `app/stream` with both parts valid names.
pub fn valid_stream_key(s: &str) -> bool {
    match s.split_once('/') {
        Some((app, stream)) => valid_stream_name(app) && valid_stream_name(stream),
        None => valid_stream_name(s),
    }
}

/// Stream names: `[A-Za-z0-9_.-]{1,128}` without `..`.
pub fn valid_stream_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        && !s.contains("..")
}

impl Pattern {
    /// Compiles a path pattern; the error says what is wrong with it.
    pub fn parse(p: &str) -> Result<Self, String> {
        let body = p.strip_prefix('/').ok_or("must start with '/'")?;
        let parts: Vec<&str> = body.split('/').collect();
        let mut segs = Vec::with_capacity(parts.len());
        let mut names = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let seg = if let Some(inner) = part.strip_prefix("{*") {
                let name = inner
                    .strip_suffix('}')
                    .ok_or("'{*name}' must fill its whole segment")?;
                if i + 1 != parts.len() {
                    return Err("'{*name}' must be the last segment".into());
                }
                Seg::Rest(Arc::from(name))
            } else if let Some(open) = part.find('{') {
                let close = part.find('}').ok_or("unclosed '{'")?;
                if close < open {
                    return Err("'}' before '{'".into());
                }
                let (prefix, name, suffix) =
                    (&part[..open], &part[open + 1..close], &part[close + 1..]);
                if suffix.contains(['{', '}']) {
                    return Err("one {name} per segment".into());
                }
                Seg::Param {
                    prefix: prefix.into(),
                    name: Arc::from(name),
                    suffix: suffix.into(),
                }
            } else if part.contains('}') {
                return Err("stray '}'".into());
            } else {
                Seg::Literal((*part).to_string())
            };
            match &seg {
                Seg::Param { name, .. } | Seg::Rest(name) => {
                    if !valid_var(name) {
                        return Err(format!("{name:?} is not a valid capture name"));
                    }
                    if names.contains(name) {
                        return Err(format!("{{{name}}} appears twice"));
                    }
                    names.push(name.clone());
                }
                Seg::Literal(_) => {}
            }
            segs.push(seg);
        }
        Ok(Self { segs })
    }

    /// The literal text every matching path starts with (`/vod/` for `/vod/{*rest}`).
    pub fn literal_prefix(&self) -> String {
        let mut out = String::from("/");
        for (i, seg) in self.segs.iter().enumerate() {
            match seg {
                Seg::Literal(l) => {
                    out.push_str(l);
                    if i + 1 < self.segs.len() {
                        out.push('/');
                    }
                }
                Seg::Param { prefix, .. } => {
                    out.push_str(prefix);
                    break;
                }
                Seg::Rest(_) => break,
            }
        }
        out
    }

    /// Whether the pattern captures `{stream}`.
    pub fn has_stream(&self) -> bool {
        self.captures(STREAM)
    }

    /// Whether the pattern captures `name`.
    pub fn captures(&self, name: &str) -> bool {
        self.segs
            .iter()
            .any(|s| matches!(s, Seg::Param { name: n, .. } | Seg::Rest(n) if &**n == name))
    }

    /// Matches a raw request path; captures are raw (not yet decoded or checked).
    pub fn matches(&self, path: &str) -> Option<Captures> {
        let body = path.strip_prefix('/')?;
        let mut rest = body;
        let mut caps = Captures::default();
        for (i, seg) in self.segs.iter().enumerate() {
            if let Seg::Rest(name) = seg {
                caps.items.push((name.clone(), rest.to_string()));
                return Some(caps);
            }
            let last = i + 1 == self.segs.len();
            let (part, next) = match rest.find('/') {
                Some(j) => (&rest[..j], Some(&rest[j + 1..])),
                None => (rest, None),
            };
            match seg {
                Seg::Literal(l) if l == part => {}
                Seg::Param {
                    prefix,
                    name,
                    suffix,
                } => {
                    let mid = part
                        .strip_prefix(prefix.as_str())?
                        .strip_suffix(suffix.as_str())?;
                    if mid.is_empty() {
                        return None;
                    }
                    caps.items.push((name.clone(), mid.to_string()));
                }
                _ => return None,
            }
            match (last, next) {
                (true, None) => return Some(caps),
                (true, Some(_)) | (false, None) => return None,
                (false, Some(n)) => rest = n,
            }
        }
        None
    }
}

/// Values captured from a path.
#[derive(Debug, Default, Clone)]
pub struct Captures {
    items: Vec<(Arc<str>, String)>,
}

impl Captures {
    /// The raw value of capture `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The key the registry knows the captured stream by: `app/stream` when the route captures
    /// `{app}`, else the stream name.
    pub fn stream_key(&self) -> std::borrow::Cow<'_, str> {
        let stream = self.get(STREAM).unwrap_or_default();
        match self.get(APP) {
            Some(app) => std::borrow::Cow::Owned(format!("{app}/{stream}")),
            None => std::borrow::Cow::Borrowed(stream),
        }
    }

    /// Checks every capture and decodes `{stream}` and `{app}`; afterwards every value is safe to put in an
    /// upstream path.
    pub fn validate(mut self) -> Result<Self, GatewayError> {
        for (name, value) in &mut self.items {
            if &**name == STREAM || &**name == APP {
                let decoded = percent_decode_str(value)
                    .decode_utf8()
                    .map_err(|_| GatewayError::BadStreamName)?;
                if !valid_stream_name(&decoded) {
                    return Err(GatewayError::BadStreamName);
                }
                *value = decoded.into_owned();
            } else {
                check_path_capture(value)?;
            }
        }
        Ok(self)
    }
}

fn check_path_capture(raw: &str) -> Result<(), GatewayError> {
    // `%2F`, `%5C` or `%00` in any case, looked for without a lowercased copy.
    let encoded_bad = raw.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && matches!(
                (w[1], w[2].to_ascii_lowercase()),
                (b'2', b'f') | (b'5', b'c') | (b'0', b'0')
            )
    });
    if encoded_bad || raw.contains('\\') {
        return Err(GatewayError::BadPath("encoded separator or NUL in path"));
    }
    for seg in raw.split('/') {
        // Plain ASCII without escapes (nearly every path) decodes to itself: checked as is.
        if !seg.bytes().any(|b| b == b'%' || !b.is_ascii()) {
            if seg == ".." || seg == "." {
                return Err(GatewayError::BadPath("dot segment in path"));
            }
            if seg.bytes().any(|b| b.is_ascii_control()) {
                return Err(GatewayError::BadPath("control character in path"));
            }
            continue;
        }
        let decoded = percent_decode_str(seg).decode_utf8_lossy();
        if decoded == ".." || decoded == "." {
            return Err(GatewayError::BadPath("dot segment in path"));
        }
        if decoded.chars().any(char::is_control) {
            return Err(GatewayError::BadPath("control character in path"));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(String),
}

/// An upstream path template: literal text with `{name}` / `{*name}` holes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Compiles a template; it must start with `/`.
    pub fn parse(t: &str) -> Result<Self, String> {
        if !t.starts_with('/') {
            return Err("must start with '/'".into());
        }
        if t.contains(['?', '#']) || t.chars().any(|c| c.is_control() || c == ' ') {
            return Err("no query, fragment, spaces or control characters".into());
        }
        let mut pieces = Vec::new();
        let mut rest = t;
        while let Some(open) = rest.find('{') {
            if rest[..open].contains('}') {
                return Err("stray '}'".into());
            }
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let close = rest[open..].find('}').ok_or("unclosed '{'")? + open;
            let inner = &rest[open + 1..close];
            let name = inner.strip_prefix('*').unwrap_or(inner);
            if !valid_var(name) {
                return Err(format!("{name:?} is not a valid capture name"));
            }
            pieces.push(Piece::Var(name.to_string()));
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err("stray '}'".into());
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Self { pieces })
    }

    /// The literal text every rendered path starts with (`/files/` for `/files/{*rest}`).
    pub fn literal_prefix(&self) -> &str {
        match self.pieces.first() {
            Some(Piece::Text(t)) => t,
            _ => "",
        }
    }

    /// The capture names the template uses.
    pub fn vars(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(v) => Some(v.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// Fills the holes from validated captures.
    pub fn render(&self, caps: &Captures) -> String {
        let var = |v: &str| caps.get(v).unwrap_or("");
        let len = self
            .pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => t.len(),
                Piece::Var(v) => var(v).len(),
            })
            .sum();
        let mut out = String::with_capacity(len);
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(v) => out.push_str(caps.get(v).unwrap_or("")),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str) -> Option<Vec<(String, String)>> {
        Pattern::parse(p).expect("pattern").matches(path).map(|c| {
            c.items
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect()
        })
    }

    #[test]
    fn matching() {
        assert_eq!(
            m("/flv/{stream}.flv", "/flv/cam1.flv"),
            Some(vec![("stream".into(), "cam1".into())])
        );
        assert_eq!(m("/flv/{stream}.flv", "/flv/.flv"), None);
        assert_eq!(m("/flv/{stream}.flv", "/flv/cam1.mp4"), None);
        assert_eq!(m("/flv/{stream}.flv", "/flv/a/b.flv"), None);
        assert_eq!(
            m("/vod/{*rest}", "/vod/a/b/c.mp4"),
            Some(vec![("rest".into(), "a/b/c.mp4".into())])
        );
        assert_eq!(m("/vod/{*rest}", "/vod"), None);
        assert_eq!(
            m("/hls/{stream}/{*rest}", "/hls/cam1/index.m3u8").map(|v| v.len()),
            Some(2)
        );
        assert_eq!(m("/a/b", "/a/b"), Some(vec![]));
        assert_eq!(m("/a/b", "/a/b/"), None);
        assert_eq!(m("/a/b", "/a"), None);
        // An encoded slash stays inside its segment.
        assert_eq!(
            m("/flv/{stream}.flv", "/flv/a%2Fb.flv"),
            Some(vec![("stream".into(), "a%2Fb".into())])
        );
    }

    #[test]
    fn bad_patterns() {
        assert!(Pattern::parse("x").is_err());
        assert!(Pattern::parse("/{*rest}/x").is_err());
        assert!(Pattern::parse("/{a}{b}").is_err());
        assert!(Pattern::parse("/{a}/{a}").is_err());
        assert!(Pattern::parse("/{1a}").is_err());
        assert!(Pattern::parse("/a}").is_err());
        assert!(Template::parse("/x?y").is_err());
        assert!(Template::parse("/{x").is_err());
    }

    #[test]
    fn an_app_capture_namespaces_the_registry_key() {
        let p = Pattern::parse("/{app}/{stream}.flv").expect("p");
        let caps = p
            .matches("/live/cam1.flv")
            .expect("match")
            .validate()
            .expect("ok");
        assert_eq!(caps.stream_key(), "live/cam1");
        let caps = Pattern::parse("/flv/{stream}.flv")
            .expect("p")
            .matches("/flv/cam1.flv")
            .expect("match")
            .validate()
            .expect("ok");
        assert_eq!(caps.stream_key(), "cam1");
        for bad in ["/a..b/cam1.flv", "/a%2Fb/cam1.flv", "/%FF/cam1.flv"] {
            assert!(p.matches(bad).expect("match").validate().is_err(), "{bad}");
        }
        assert!(valid_stream_key("live/cam1"));
        assert!(valid_stream_key("cam1"));
        for bad in ["live/", "/cam1", "a/b/c", "a/..", ""] {
            assert!(!valid_stream_key(bad), "{bad}");
        }
    }

    #[test]
    fn validation() {
        let p = Pattern::parse("/flv/{stream}.flv").expect("p");
        let ok = |path: &str| p.matches(path).expect("match").validate();
        assert_eq!(
            ok("/flv/cam_1.x-y.flv").expect("ok").get("stream"),
            Some("cam_1.x-y")
        );
        assert!(matches!(
            ok("/flv/a%2Fb.flv"),
            Err(GatewayError::BadStreamName)
        ));
        assert!(matches!(
            ok("/flv/a..b.flv"),
            Err(GatewayError::BadStreamName)
        ));
        assert!(matches!(
            ok("/flv/%2e%2e.flv"),
            Err(GatewayError::BadStreamName)
        ));
        let long = format!("/flv/{}.flv", "a".repeat(129));
        assert!(matches!(ok(&long), Err(GatewayError::BadStreamName)));
        let r = Pattern::parse("/vod/{*rest}").expect("p");
        let rest = |path: &str| r.matches(path).expect("match").validate();
        assert!(rest("/vod/a/b.mp4").is_ok());
        assert!(rest("/vod/a%20b.mp4").is_ok());
        assert!(rest("/vod/../etc/passwd").is_err());
        assert!(rest("/vod/%2e%2E/x").is_err());
        assert!(rest("/vod/a%2fb").is_err());
        assert!(rest("/vod/a%5Cb").is_err());
        assert!(rest("/vod/a%00").is_err());
        assert!(rest("/vod/a%0d%0ab").is_err());
    }

    #[test]
    fn rendering() {
        let p = Pattern::parse("/hls/{stream}/{*rest}").expect("p");
        let t = Template::parse("/files/hls/{stream}/{*rest}").expect("t");
        let caps = p
            .matches("/hls/cam1/seg%201.ts")
            .expect("m")
            .validate()
            .expect("v");
        assert_eq!(t.render(&caps), "/files/hls/cam1/seg%201.ts");
        assert_eq!(t.vars().collect::<Vec<_>>(), vec!["stream", "rest"]);
        assert_eq!(t.literal_prefix(), "/files/hls/");
        assert_eq!(p.literal_prefix(), "/hls/");
        assert_eq!(
            Pattern::parse("/flv/{stream}.flv")
                .expect("p")
                .literal_prefix(),
            "/flv/"
        );
        assert_eq!(Pattern::parse("/a/b").expect("p").literal_prefix(), "/a/b");
        assert_eq!(Pattern::parse("/{*rest}").expect("p").literal_prefix(), "/");
    }
}
