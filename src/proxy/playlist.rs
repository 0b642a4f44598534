//! HLS playlists on `hls_session` routes: recognising a node's playlist, reading it whole (up to
//! [`MAX_PLAYLIST_BYTES`]), and rewriting its URIs so each carries a session signature. The
//! signing itself is the caller's (`auth::session`); this module finds every URI a player will
//! fetch, resolves it to the path the gateway will be asked for, and puts the caller's query on
//! it.
//!
//! URIs are the lines that are not tags, and the `URI="…"` attribute of any tag (`EXT-X-KEY`,
//! `EXT-X-SESSION-KEY`, `EXT-X-MAP`, `EXT-X-MEDIA`, `EXT-X-I-FRAME-STREAM-INF`, `EXT-X-PART`,
//! `EXT-X-PRELOAD-HINT`, `EXT-X-RENDITION-REPORT`, …). A URI is resolved as a player resolves
//! it against the playlist's URL: relative ones (`seg1.ts`, `../720p/index.m3u8`) against the
//! playlist's path at the gateway, dot segments removed; a path-absolute one, or an absolute one
//! naming the node, is in the node's path space and is mapped back to the route's public path as
//! a `Location` is (`proxy::headers::rewrite_location`), so the node stays hidden; an absolute
//! one naming the gateway (its `public_url` or the `Host` the viewer used) as it is. Anything
//! else (other hosts, `data:`, `skd://`, URIs with `{$variable}`s) is left alone. A relative URI
//! stays relative: the gateway may be mounted under a path it does not see.
//!
//! The URI keeps its own query (what the node wrote, minus any stale session parameters), and
//! gets the session's parameters after it. The viewer's own query parameters are *not* copied
//! onto it: hls.js and native players fetch URIs as listed, and some of the viewer's parameters
//! must not travel (LL-HLS `_HLS_msn`/`_HLS_part` directives belong to one playlist request).

use bytes::Bytes;
use http::header::{HeaderMap, CONTENT_TYPE};
use http_body_util::BodyExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use super::headers::PathMap;
use crate::body::Body;
use crate::error::GatewayError;
use crate::upstream_path::BaseUrl;

/// The largest playlist the gateway reads and rewrites; larger ones are refused with 502
/// `playlist_too_large` (a 3-hour VOD of 2-second segments is about 250 KiB).
pub const MAX_PLAYLIST_BYTES: usize = 1 << 20;

/// The content types HLS playlists are served with.
const PLAYLIST_TYPES: [&str; 4] = [
    "application/vnd.apple.mpegurl",
    "application/x-mpegurl",
    "audio/mpegurl",
    "audio/x-mpegurl",
];

/// Tags whose `URI` names another playlist (whose lifetime is the session's, see
/// `auth::session`); every other tag's `URI` is a segment, part, key or map.
const PLAYLIST_URI_TAGS: [&str; 3] = [
    "#EXT-X-MEDIA",
    "#EXT-X-I-FRAME-STREAM-INF",
    "#EXT-X-RENDITION-REPORT",
];

/// Whether a node's answer for the gateway path `path` is a playlist: by its content type, or,
/// when that says nothing useful, by the path's `.m3u8` extension.
pub fn is_playlist(path: &str, headers: &HeaderMap) -> bool {
    let by_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|t| PLAYLIST_TYPES.iter().any(|p| t.eq_ignore_ascii_case(p)));
    let p = path.as_bytes();
    by_type || (p.len() >= 5 && p[p.len() - 5..].eq_ignore_ascii_case(b".m3u8"))
}

/// Whether `text` is an M3U playlist (`#EXTM3U` first, after an optional byte order mark).
pub fn is_m3u(text: &str) -> bool {
    text.trim_start_matches('\u{feff}').starts_with("#EXTM3U")
}

/// Reads a node's playlist body whole: at most [`MAX_PLAYLIST_BYTES`], else
/// `PlaylistTooLarge`; a body that breaks is the node's failure (502 `upstream_error`).
pub async fn read(mut body: Body, node: &str) -> Result<Bytes, GatewayError> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|source| GatewayError::Upstream {
            node: node.to_string(),
            source,
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > MAX_PLAYLIST_BYTES {
                return Err(GatewayError::PlaylistTooLarge {
                    node: node.to_string(),
                    limit: MAX_PLAYLIST_BYTES,
                });
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// What the signer needs to know about a playlist before its URIs are signed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// A master (multivariant) playlist: it lists other playlists, and is not reloaded.
    pub master: bool,
    /// `#EXT-X-ENDLIST`: a finished (VOD) playlist, not reloaded; its segments are fetched over
    /// its whole duration.
    pub ended: bool,
    /// The sum of its `#EXTINF` durations, whole seconds rounded up.
    pub duration: u64,
}

/// Reads a playlist's [`Shape`].
pub fn shape(text: &str) -> Shape {
    let mut s = Shape::default();
    let mut secs = 0f64;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with("#EXT-X-STREAM-INF:") || t.starts_with("#EXT-X-I-FRAME-STREAM-INF:") {
            s.master = true;
        } else if t == "#EXT-X-ENDLIST" {
            s.ended = true;
        } else if let Some(v) = t.strip_prefix("#EXTINF:") {
            let d: f64 = v
                .split(',')
                .next()
                .unwrap_or("")
                .trim()
                .parse()
                .unwrap_or(0.0);
            if d.is_finite() {
                secs += d.clamp(0.0, 86_400.0);
            }
        }
    }
    s.duration = secs.ceil().min(u64::MAX as f64) as u64;
    s
}

/// What a URI names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Another playlist (a variant, a rendition, an I-frame playlist, a rendition report).
    Playlist,
    /// A segment, partial segment, preload hint, key or map.
    Media,
}

/// Where the playlist was fetched: what its URIs are resolved against.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    /// The playlist's path at the gateway, as in the request URL.
    pub path: &'a str,
    /// The host the viewer named (request line or `Host`, port included as sent).
    pub host: &'a str,
    /// Where viewers reach the gateway (`server.public_url`).
    pub public_url: &'a BaseUrl,
    /// The node that served the playlist.
    pub node: &'a BaseUrl,
    /// The route's upstream and public path prefixes.
    pub map: PathMap<'a>,
}

/// The playlist with its URIs rewritten. `sign(path, kind)` gets each URI's gateway path and
/// answers the query to add, or `None` to leave the URI alone (not a path it covers).
pub fn rewrite(
    text: &str,
    place: &Place<'_>,
    sign: &mut dyn FnMut(&str, Kind) -> Option<String>,
) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    // The line after `#EXT-X-STREAM-INF` is a variant playlist's URI.
    let mut variant_next = false;
    for line in text.split_inclusive('\n') {
        let content = line.trim_end_matches(['\n', '\r']);
        let eol = &line[content.len()..];
        let t = content.trim();
        if t.is_empty() {
            out.push_str(line);
            continue;
        }
        if t.starts_with('#') {
            let name = t.split(':').next().unwrap_or("");
            if name == "#EXT-X-STREAM-INF" {
                variant_next = true;
            }
            let kind = if PLAYLIST_URI_TAGS.contains(&name) {
                Kind::Playlist
            } else {
                Kind::Media
            };
            let new = if t.starts_with("#EXT") && name != "#EXTINF" {
                uri_attribute(content).and_then(|(a, b)| {
                    rewrite_uri(&content[a..b], kind, place, sign)
                        .map(|u| format!("{}{u}{}", &content[..a], &content[b..]))
                })
            } else {
                None
            };
            match new {
                Some(n) => {
                    out.push_str(&n);
                    out.push_str(eol);
                }
                None => out.push_str(line),
            }
            continue;
        }
        let kind = if std::mem::take(&mut variant_next) {
            Kind::Playlist
        } else {
            Kind::Media
        };
        match rewrite_uri(t, kind, place, sign) {
            Some(u) => {
                out.push_str(&u);
                out.push_str(eol);
            }
            None => out.push_str(line),
        }
    }
    out
}

/// The byte range of a tag line's quoted `URI` attribute value.
fn uri_attribute(line: &str) -> Option<(usize, usize)> {
    let b = line.as_bytes();
    let mut i = line.find(':')? + 1;
    while i < b.len() {
        let name_start = i;
        while i < b.len() && b[i] != b'=' && b[i] != b',' {
            i += 1;
        }
        if i < b.len() && b[i] == b'=' {
            let name = line[name_start..i].trim();
            i += 1;
            if i < b.len() && b[i] == b'"' {
                let start = i + 1;
                let end = start + line[start..].find('"')?;
                if name == "URI" {
                    return Some((start, end));
                }
                i = end + 1;
            }
        }
        // On to the next attribute (past an enumerated value, or a malformed one).
        while i < b.len() && b[i] != b',' {
            i += 1;
        }
        i += 1;
    }
    None
}

/// A URI with the session's query added, or `None` to leave it as it is.
fn rewrite_uri(
    uri: &str,
    kind: Kind,
    place: &Place<'_>,
    sign: &mut dyn FnMut(&str, Kind) -> Option<String>,
) -> Option<String> {
    if uri.contains("{$") {
        return None; // EXT-X-DEFINE variables: the player substitutes them, after us.
    }
    let (body, fragment) = match uri.find('#') {
        Some(i) => (&uri[..i], Some(&uri[i..])),
        None => (uri, None),
    };
    let (reference, query) = match body.find('?') {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let (path, lead) = locate(reference, place)?;
    let path = normalize(&path);
    let ours = sign(&path, kind);
    // A URI naming the node is rewritten even when not signed, so the node stays hidden.
    if ours.is_none() && lead.is_none() {
        return None;
    }
    let mut out = lead.unwrap_or_else(|| reference.to_string());
    let theirs = query.and_then(|q| {
        let q = q
            .split('&')
            .filter(|p| {
                let key = p.split('=').next().unwrap_or("");
                !crate::auth::session::PARAMS
                    .iter()
                    .any(|s| key.eq_ignore_ascii_case(s))
            })
            .collect::<Vec<_>>()
            .join("&");
        (!q.is_empty()).then_some(q)
    });
    let joined: Vec<&str> = theirs
        .as_deref()
        .into_iter()
        .chain(ours.as_deref())
        .collect();
    if !joined.is_empty() {
        out.push('?');
        out.push_str(&joined.join("&"));
    }
    if let Some(f) = fragment {
        out.push_str(f);
    }
    Some(out)
}

/// The gateway path a URI reference resolves to, and, when the reference itself must change
/// (it named the node), its new form. `None`: not something the gateway serves.
fn locate(reference: &str, place: &Place<'_>) -> Option<(String, Option<String>)> {
    let public = place.public_url;
    if let Some(rest) = reference.strip_prefix("//") {
        // Scheme-relative: `//host/path`.
        return locate_authority(rest, place);
    }
    if let Some((scheme, rest)) = split_scheme(reference) {
        if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
            return None;
        }
        return locate_authority(rest.strip_prefix("//")?, place);
    }
    if reference.starts_with('/') {
        // Path-absolute: the node wrote it about itself.
        return Some(match node_to_public(reference, place) {
            Some(p) => {
                let lead = format!("{}{p}", public.prefix);
                (p, Some(lead))
            }
            None => (reference.to_string(), None),
        });
    }
    let dir = &place.path[..place.path.rfind('/').map_or(0, |i| i + 1)];
    Some((format!("{dir}{reference}"), None))
}

/// `host[:port]/path` of an absolute URI: the node's (mapped, and the URI rewritten to the
/// public URL), the gateway's (as is), or someone else's (`None`).
fn locate_authority(rest: &str, place: &Place<'_>) -> Option<(String, Option<String>)> {
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let public = place.public_url;
    if authority.eq_ignore_ascii_case(&place.node.authority) {
        let p = node_to_public(path, place).unwrap_or_else(|| {
            path.strip_prefix(place.node.prefix.as_str())
                .filter(|p| p.starts_with('/'))
                .unwrap_or(path)
                .to_string()
        });
        let lead = format!("{}{}{p}", public.origin(), public.prefix);
        return Some((p, Some(lead)));
    }
    if authority.eq_ignore_ascii_case(&public.authority) {
        let p = path.strip_prefix(public.prefix.as_str())?;
        return p.starts_with('/').then(|| (p.to_string(), None));
    }
    if !place.host.is_empty() && authority.eq_ignore_ascii_case(place.host) {
        return Some((path.to_string(), None));
    }
    None
}

/// A node path under the route's upstream prefix, as the gateway serves it.
fn node_to_public(path: &str, place: &Place<'_>) -> Option<String> {
    let tail = path
        .strip_prefix(place.node.prefix.as_str())?
        .strip_prefix(place.map.upstream)?;
    Some(format!("{}{tail}", place.map.public))
}

/// `scheme` and the rest when `reference` starts with `scheme:` (RFC 3986 §3.1).
fn split_scheme(reference: &str) -> Option<(&str, &str)> {
    let colon = reference.find(':')?;
    let scheme = &reference[..colon];
    let mut bytes = scheme.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphabetic());
    (first_ok && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')))
        .then(|| (scheme, &reference[colon + 1..]))
}

/// What a browser percent-encodes in a path (the WHATWG URL path set, without `?` and `#`,
/// which never reach here).
const PATH_ENCODE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'`')
    .add(b'{')
    .add(b'}');

/// The path as a player will send it: percent-encoded like a browser does, dot segments
/// (`.`, `..`, and their `%2e` spellings) removed (RFC 3986 §5.2.4).
fn normalize(path: &str) -> String {
    let encoded = utf8_percent_encode(path, PATH_ENCODE).to_string();
    let is_dot = |s: &str| s == "." || s.eq_ignore_ascii_case("%2e");
    let is_dotdot = |s: &str| {
        matches!(
            s.to_ascii_lowercase().as_str(),
            ".." | ".%2e" | "%2e." | "%2e%2e"
        )
    };
    let segs: Vec<&str> = encoded.split('/').skip(1).collect();
    let mut out: Vec<&str> = Vec::with_capacity(segs.len());
    let last = segs.len().saturating_sub(1);
    for (i, seg) in segs.iter().enumerate() {
        if is_dot(seg) {
            if i == last {
                out.push("");
            }
        } else if is_dotdot(seg) {
            out.pop();
            if i == last {
                out.push("");
            }
        } else {
            out.push(seg);
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(s: &str) -> BaseUrl {
        BaseUrl::parse(s).expect("url")
    }

    /// Rewrites `text` fetched at `path`, signing every path under `/hls/` with `s=<path>`
    /// (`p=` for playlists), as the gateway does for its `hls_session` routes.
    fn run(text: &str, path: &str) -> String {
        let public = base("https://gw.example");
        let node = base("http://10.0.0.9:8080");
        let place = Place {
            path,
            host: "gw.example",
            public_url: &public,
            node: &node,
            map: PathMap {
                upstream: "/hls/",
                public: "/hls/",
            },
        };
        rewrite(text, &place, &mut |p, kind| {
            p.starts_with("/hls/").then(|| match kind {
                Kind::Playlist => format!("p={p}"),
                Kind::Media => format!("s={p}"),
            })
        })
    }

    #[test]
    fn media_playlist_segments_and_tags() {
        let text = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n\
#EXT-X-KEY:METHOD=AES-128,URI=\"key.bin\",IV=0x00000000000000000000000000000001\n\
#EXT-X-MAP:URI=\"init.mp4\",BYTERANGE=\"720@0\"\n\
#EXTINF:2.000,\nseg1.ts\n#EXTINF:2.000,title, with comma\n seg2.ts?x=1 \n\
#EXT-X-ENDLIST\n";
        let out = run(text, "/hls/cam1/index.m3u8");
        assert_eq!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n\
#EXT-X-KEY:METHOD=AES-128,URI=\"key.bin?s=/hls/cam1/key.bin\",IV=0x00000000000000000000000000000001\n\
#EXT-X-MAP:URI=\"init.mp4?s=/hls/cam1/init.mp4\",BYTERANGE=\"720@0\"\n\
#EXTINF:2.000,\nseg1.ts?s=/hls/cam1/seg1.ts\n#EXTINF:2.000,title, with comma\nseg2.ts?x=1&s=/hls/cam1/seg2.ts\n\
#EXT-X-ENDLIST\n"
        );
        assert_eq!(
            shape(text),
            Shape {
                master: false,
                ended: true,
                duration: 4
            }
        );
    }

    #[test]
    fn master_playlist_variants_renditions_and_iframes() {
        let text = "#EXTM3U\r\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"en, main\",URI=\"audio/en.m3u8\"\r\n\
#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID=\"cc\",NAME=\"cc1\",INSTREAM-ID=\"CC1\"\r\n\
#EXT-X-STREAM-INF:BANDWIDTH=1280000,CODECS=\"avc1.4d401f,mp4a.40.2\",AUDIO=\"aud\"\r\n\
720p/index.m3u8\r\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=86000,URI=\"720p/iframes.m3u8\"\r\n\
#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,URI=\"skd://key-id\",KEYFORMAT=\"com.apple.streamingkeydelivery\"\r\n";
        let out = run(text, "/hls/cam1/master.m3u8");
        assert_eq!(
            out,
            "#EXTM3U\r\n\
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"en, main\",URI=\"audio/en.m3u8?p=/hls/cam1/audio/en.m3u8\"\r\n\
#EXT-X-MEDIA:TYPE=CLOSED-CAPTIONS,GROUP-ID=\"cc\",NAME=\"cc1\",INSTREAM-ID=\"CC1\"\r\n\
#EXT-X-STREAM-INF:BANDWIDTH=1280000,CODECS=\"avc1.4d401f,mp4a.40.2\",AUDIO=\"aud\"\r\n\
720p/index.m3u8?p=/hls/cam1/720p/index.m3u8\r\n\
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=86000,URI=\"720p/iframes.m3u8?p=/hls/cam1/720p/iframes.m3u8\"\r\n\
#EXT-X-SESSION-KEY:METHOD=SAMPLE-AES,URI=\"skd://key-id\",KEYFORMAT=\"com.apple.streamingkeydelivery\"\r\n"
        );
        assert!(shape(text).master);
        assert!(!shape(text).ended);
    }

    #[test]
    fn low_latency_tags() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-PART-INF:PART-TARGET=1.0\n\
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=3.0\n\
#EXT-X-MEDIA-SEQUENCE:100\n#EXTINF:4.0,\nseg100.mp4\n\
#EXT-X-PART:DURATION=1.0,URI=\"seg101.part0.mp4\",INDEPENDENT=YES\n\
#EXT-X-PART:DURATION=1.0,URI=\"seg101.mp4\",BYTERANGE=\"20000@0\"\n\
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg101.part2.mp4\"\n\
#EXT-X-RENDITION-REPORT:URI=\"../480p/index.m3u8\",LAST-MSN=101,LAST-PART=1\n\
#EXT-X-DATERANGE:ID=\"ad\",START-DATE=\"2026-01-01T00:00:00Z\",X-ASSET-URI=\"http://ads/x.m3u8\"\n";
        let out = run(text, "/hls/cam1/720p/index.m3u8");
        for want in [
            "\nseg100.mp4?s=/hls/cam1/720p/seg100.mp4\n",
            "URI=\"seg101.part0.mp4?s=/hls/cam1/720p/seg101.part0.mp4\",INDEPENDENT=YES\n",
            "URI=\"seg101.mp4?s=/hls/cam1/720p/seg101.mp4\",BYTERANGE=\"20000@0\"\n",
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg101.part2.mp4?s=/hls/cam1/720p/seg101.part2.mp4\"\n",
            "#EXT-X-RENDITION-REPORT:URI=\"../480p/index.m3u8?p=/hls/cam1/480p/index.m3u8\",LAST-MSN=101,LAST-PART=1\n",
            // Not a URI attribute: left alone.
            "X-ASSET-URI=\"http://ads/x.m3u8\"\n",
        ] {
            assert!(out.contains(want), "{want:?} in\n{out}");
        }
    }

    #[test]
    fn absolute_and_relative_forms() {
        let text = "#EXTM3U\n\
https://cdn.other.example/hls/cam1/a.ts\n\
https://gw.example/hls/cam1/b.ts\n\
HTTPS://GW.EXAMPLE/hls/cam1/b2.ts#t=1\n\
//gw.example/hls/cam1/c.ts\n\
http://10.0.0.9:8080/hls/cam1/d.ts?n=1&hls_sig=stale\n\
/hls/cam1/e.ts\n\
/other/f.ts\n\
../cam2/g.ts\n\
./sub/../h.ts\n\
../../../../hls/cam1/i.ts\n\
seg%20j.ts\n\
seg k.ts\n\
data:text/plain,hello\n\
a:b.ts\n\
seg{$n}.ts\n";
        let out = run(text, "/hls/cam1/index.m3u8");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "#EXTM3U",
                "https://cdn.other.example/hls/cam1/a.ts",
                "https://gw.example/hls/cam1/b.ts?s=/hls/cam1/b.ts",
                "HTTPS://GW.EXAMPLE/hls/cam1/b2.ts?s=/hls/cam1/b2.ts#t=1",
                "//gw.example/hls/cam1/c.ts?s=/hls/cam1/c.ts",
                // The node's own address becomes the public URL; its stale session goes.
                "https://gw.example/hls/cam1/d.ts?n=1&s=/hls/cam1/d.ts",
                "/hls/cam1/e.ts?s=/hls/cam1/e.ts",
                "/other/f.ts",
                "../cam2/g.ts?s=/hls/cam2/g.ts",
                "./sub/../h.ts?s=/hls/cam1/h.ts",
                "../../../../hls/cam1/i.ts?s=/hls/cam1/i.ts",
                "seg%20j.ts?s=/hls/cam1/seg%20j.ts",
                "seg k.ts?s=/hls/cam1/seg%20k.ts",
                "data:text/plain,hello",
                "a:b.ts",
                "seg{$n}.ts",
            ]
        );
    }

    #[test]
    fn the_route_mapping_applies_to_node_paths() {
        let public = base("https://gw.example/sg");
        let node = base("http://10.0.0.9:8080/media");
        let place = Place {
            path: "/tv/cam1/index.m3u8",
            host: "gw.example",
            public_url: &public,
            node: &node,
            map: PathMap {
                upstream: "/live/",
                public: "/tv/",
            },
        };
        let out = rewrite(
            "#EXTM3U\n/media/live/cam1/1.ts\nhttp://10.0.0.9:8080/media/live/cam1/2.ts\n3.ts\n",
            &place,
            &mut |p, _| p.starts_with("/tv/").then(|| format!("s={p}")),
        );
        assert_eq!(
            out,
            "#EXTM3U\n/sg/tv/cam1/1.ts?s=/tv/cam1/1.ts\nhttps://gw.example/sg/tv/cam1/2.ts?s=/tv/cam1/2.ts\n3.ts?s=/tv/cam1/3.ts\n"
        );
    }

    #[test]
    fn dot_segments_and_encoding() {
        assert_eq!(normalize("/a/b/../c"), "/a/c");
        assert_eq!(normalize("/a/./b/."), "/a/b/");
        assert_eq!(normalize("/a/b/.."), "/a/");
        assert_eq!(normalize("/../../x"), "/x");
        assert_eq!(normalize("/a/%2E%2e/x"), "/x");
        assert_eq!(normalize("/a/.%2e/x"), "/x");
        assert_eq!(
            normalize("/a b/é\"<>`{}"),
            "/a%20b/%C3%A9%22%3C%3E%60%7B%7D"
        );
        assert_eq!(normalize("/keep%2Fthis%41"), "/keep%2Fthis%41");
    }

    #[test]
    fn uri_attribute_parsing() {
        let line = "#EXT-X-MEDIA:NAME=\"a, URI=b\",GROUP-ID=g,URI=\"real.m3u8\"";
        let (a, b) = uri_attribute(line).expect("found");
        assert_eq!(&line[a..b], "real.m3u8");
        assert_eq!(uri_attribute("#EXT-X-KEY:METHOD=NONE"), None);
        assert_eq!(uri_attribute("#EXT-X-KEY:URI=unquoted"), None);
        assert_eq!(uri_attribute("#EXT-X-KEY:URI=\"open"), None);
        assert_eq!(uri_attribute("#EXTINF:2.0,"), None);
    }

    #[test]
    fn recognising_playlists() {
        let mut h = HeaderMap::new();
        assert!(is_playlist("/a/index.m3u8", &h));
        assert!(is_playlist("/a/INDEX.M3U8", &h));
        assert!(!is_playlist("/a/seg.ts", &h));
        h.insert(
            CONTENT_TYPE,
            "Audio/MPEGURL; charset=utf-8".parse().expect("hv"),
        );
        assert!(is_playlist("/a/playlist", &h));
        h.insert(
            CONTENT_TYPE,
            "application/vnd.apple.mpegurl".parse().expect("hv"),
        );
        assert!(is_playlist("/a/playlist", &h));
        h.insert(CONTENT_TYPE, "video/mp2t".parse().expect("hv"));
        assert!(!is_playlist("/a/seg.ts", &h));
        assert!(is_m3u("\u{feff}#EXTM3U\n"));
        assert!(!is_m3u("<html>"));
    }

    #[test]
    fn extinf_durations_add_up() {
        let s = shape("#EXTM3U\n#EXTINF:1.5,\na\n#EXTINF:2,\nb\n#EXTINF:nan,\nc\n#EXTINF:-4,\nd\n");
        assert_eq!(s.duration, 4);
        assert!(!s.ended && !s.master);
    }

    #[tokio::test]
    async fn a_playlist_over_the_limit_is_refused() {
        let big = crate::body::full(vec![b'#'; MAX_PLAYLIST_BYTES + 1]);
        assert!(matches!(
            read(big, "n1").await,
            Err(GatewayError::PlaylistTooLarge { .. })
        ));
        let ok = crate::body::full(vec![b'#'; MAX_PLAYLIST_BYTES]);
        assert_eq!(
            read(ok, "n1").await.expect("fits").len(),
            MAX_PLAYLIST_BYTES
        );
    }
}
