//! HLS sessions (`hls_session = true`) end to end: a real gateway process in front of a scripted
//! node (master, LL-HLS media and VOD playlists), the origin's static VOD files, and a live
//! stream written by nginx-rtmp from an ffmpeg push, played by a simulated player and by hls.js
//! in headless Chromium. One credential check (one hook call, or one play token that expires
//! seconds later) covers the whole playback; the session parameters never reach a node.

mod common;

use std::collections::HashSet;
use std::net::IpAddr;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::nginx_rtmp::{push, NginxRtmp};
use common::upstream::{Reply, Seen, Upstream};
use common::{gateway, get, raw_request, wait_until, RawResponse};
use streamgate::auth::signed::Scope;
use streamgate::auth::{HlsSessions, Session, SignedUrls, SigningKey};
use streamgate::config::HlsSessionSettings;

const SIGNING_SECRET: &str = "0123456789abcdef-signing";
const SESSION_SECRET: &str = "0123456789abcdef-session";

const MASTER: &str = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"aud\",NAME=\"English, main\",DEFAULT=YES,URI=\"audio/index.m3u8\"
#EXT-X-STREAM-INF:BANDWIDTH=1280000,CODECS=\"avc1.4d401f,mp4a.40.2\",AUDIO=\"aud\"
720p/index.m3u8?v=2
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=86000,URI=\"720p/iframes.m3u8\"
";

/// A low-latency live media playlist: a map, a key at a path-absolute URI, full segments (one
/// with a query of its own), parts, a preload hint, a rendition report, and an ad on another
/// host.
const LIVE: &str = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-PART-INF:PART-TARGET=0.5
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.5
#EXT-X-MEDIA-SEQUENCE:100
#EXT-X-MAP:URI=\"init.mp4\"
#EXT-X-KEY:METHOD=AES-128,URI=\"/hls/cam1/keys/k1.bin\"
#EXTINF:2.0,
seg100.m4s
#EXTINF:2.0,
https://cdn.elsewhere.example/ad/1.ts
#EXTINF:2.0,
seg101.m4s?q=full
#EXT-X-PART:DURATION=0.5,URI=\"seg102.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.5,URI=\"seg102.1.m4s\"
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"seg102.2.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"../audio/index.m3u8\",LAST-MSN=102,LAST-PART=1
";

const AUDIO: &str = "#EXTM3U
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:100
#EXTINF:2.0,
a100.aac
#EXTINF:2.0,
a101.aac
";

const VOD: &str = "#EXTM3U
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-TARGETDURATION:10
#EXTINF:10.0,
v0.ts
#EXTINF:10.0,
v1.ts
#EXTINF:9.5,
v2.ts
#EXT-X-ENDLIST
";

const MPEGURL: &str = "application/vnd.apple.mpegurl";

fn playlist(body: &str) -> Reply {
    Reply::Ok {
        headers: vec![
            ("Content-Type".into(), MPEGURL.into()),
            ("ETag".into(), "\"node-etag\"".into()),
            (
                "Last-Modified".into(),
                "Thu, 01 Jan 2026 00:00:00 GMT".into(),
            ),
            ("Cache-Control".into(), "max-age=1".into()),
        ],
        body: body.as_bytes().to_vec(),
    }
}

/// The scripted node: playlists by path (the query is ignored), `media:<path>` for anything
/// else.
fn node_script(req: &Seen) -> Reply {
    let path = req.target.split('?').next().unwrap_or("");
    let file = path
        .strip_prefix("/hls/cam1/")
        .or_else(|| path.strip_prefix("/hls/cam2/"))
        .unwrap_or("");
    match file {
        "master.m3u8" => playlist(MASTER),
        "720p/index.m3u8" => playlist(LIVE),
        "720p/iframes.m3u8" => playlist(&LIVE.replace("#EXT-X-PART", "#X-IGNORED")),
        "audio/index.m3u8" => playlist(AUDIO),
        "vod.m3u8" => playlist(VOD),
        // A playlist by content type only; a master, so it is answered directly.
        "playlist" => Reply::Ok {
            headers: vec![("Content-Type".into(), "audio/mpegurl".into())],
            body: MASTER.as_bytes().to_vec(),
        },
        "big.m3u8" => {
            let mut body = b"#EXTM3U\n".to_vec();
            while body.len() <= (1 << 20) {
                body.extend_from_slice(b"#EXTINF:2.0,\nsegment-with-a-long-name-0000000000.ts\n");
            }
            Reply::Ok {
                headers: vec![("Content-Type".into(), MPEGURL.into())],
                body,
            }
        }
        "fake.m3u8" => Reply::Ok {
            headers: vec![("Content-Type".into(), "text/html".into())],
            body: b"<html>not a playlist</html>".to_vec(),
        },
        "gone.m3u8" => Reply::Status {
            status: 404,
            headers: vec![
                ("Content-Type".into(), "text/plain".into()),
                ("ETag".into(), "\"e404\"".into()),
            ],
            body: b"no such playlist".to_vec(),
        },
        _ => Reply::Ok {
            headers: vec![("Content-Type".into(), "video/mp4".into())],
            body: format!("media:{path}").into_bytes(),
        },
    }
}

/// The auth hook (at `/check`): allows the token `good`. Anything else it is sent (nginx-rtmp's
/// `on_publish`) is allowed.
fn hook_script(req: &Seen) -> Reply {
    let allowed = req.target != "/check"
        || serde_json::from_slice::<serde_json::Value>(&req.body)
            .is_ok_and(|b| b["token"] == "good");
    if allowed {
        Reply::Ok {
            headers: vec![],
            body: b"{}".to_vec(),
        }
    } else {
        Reply::Status {
            status: 403,
            headers: vec![],
            body: b"no".to_vec(),
        }
    }
}

fn hook_calls(hook: &Upstream) -> usize {
    hook.requests()
        .iter()
        .filter(|r| r.target == "/check")
        .count()
}

fn config(hook: &str, node: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[auth]
tokens = ["good"]
signing_keys = [{{ id = "k1", secret = "{SIGNING_SECRET}" }}]

[auth.hook]
url = "{hook}/check"
cache_ttl = "0s"      # no decision cache: only the session can spare the hook

[auth.hls_session]
secret = "{SESSION_SECRET}"
ttl = "1m"

[[nodes]]
id = "a"
url = "{node}"

[[routes]]
path = "/hls/{{stream}}/{{*rest}}"
action = "proxy"
to = "a"
auth = "hook"
hls_session = true

[[routes]]
path = "/signed/{{stream}}/{{*rest}}"
action = "proxy"
to = "a"
upstream = "/hls/{{stream}}/{{*rest}}"
auth = "signed"
hls_session = true

[[routes]]
path = "/plain/{{*rest}}"
action = "proxy"
to = "a"
upstream = "/hls/{{*rest}}"
auth = "token"
"#
    )
}

/// Every URI a player fetches from `text`: URI lines and the `URI="…"` attributes of tags
/// (`#EXT…`; other comment lines are not tags).
fn uris(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() {
            continue;
        }
        if !line.starts_with('#') {
            out.push(line.to_string());
        } else if let Some(i) = line
            .starts_with("#EXT")
            .then(|| line.find(",URI=\"").or_else(|| line.find(":URI=\"")))
            .flatten()
        {
            let i = i + 1;
            let rest = &line[i + 5..];
            out.push(rest[..rest.find('"').expect("closing quote")].to_string());
        }
    }
    out
}

/// `uri` resolved against the request target `base`, as a player does (relative or
/// path-absolute URIs only).
fn resolve(base: &str, uri: &str) -> String {
    let (p, q) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    let joined = if p.starts_with('/') {
        p.to_string()
    } else {
        let base_path = base.split('?').next().unwrap_or("");
        format!(
            "{}{p}",
            &base_path[..base_path.rfind('/').expect("a /") + 1]
        )
    };
    let mut segs: Vec<&str> = Vec::new();
    let parts: Vec<&str> = joined.split('/').skip(1).collect();
    for (i, seg) in parts.iter().enumerate() {
        match *seg {
            "." if i + 1 == parts.len() => segs.push(""),
            "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    match q {
        Some(q) => format!("/{}?{q}", segs.join("/")),
        None => format!("/{}", segs.join("/")),
    }
}

/// The value of query parameter `name` in `url`.
fn param(url: &str, name: &str) -> Option<String> {
    url.split_once('?')?.1.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| v.to_string())
    })
}

fn now() -> u64 {
    streamgate::auth::now_unix()
}

fn assert_refused(r: &RawResponse, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.json()["error"], code, "{}", r.text());
}

/// A rewritten playlist's answer: 200, per viewer, its own length, none of the node's
/// validators.
fn assert_rewritten(r: &RawResponse) {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("etag"), None);
    assert_eq!(r.header("last-modified"), None);
    assert_eq!(
        r.header("content-length").and_then(|l| l.parse().ok()),
        Some(r.body.len()),
        "the length of the rewritten body"
    );
    assert!(r.text().starts_with("#EXTM3U"), "{}", r.text());
}

/// Fetches every URI of the playlist at `target` that the gateway serves; returns how many
/// requests were made. Each must be answered by the node (`media:` + the node's path).
fn fetch_media(gw: std::net::SocketAddr, target: &str, text: &str) -> usize {
    let mut n = 0;
    for u in uris(text) {
        if u.starts_with("https://") || u.ends_with(".m3u8") || u.contains(".m3u8?") {
            continue;
        }
        let url = resolve(target, &u);
        assert!(param(&url, "hls_sig").is_some(), "{u} carries a session");
        let r = get(gw, &url, "");
        assert_eq!(r.status, 200, "{url}: {}", r.text());
        assert!(r.text().starts_with("media:/hls/"), "{url}: {}", r.text());
        n += 1;
    }
    n
}

#[test]
fn one_hook_call_covers_a_session_and_its_parameters_stay_here() {
    let hook = Upstream::start(hook_script);
    let node = Upstream::start(node_script);
    let (gw, _dir) = gateway(&config(&hook.url(), &node.url()));
    let addr = gw.addr();

    // The master, with the viewer's credential: one hook call, and every URI signed.
    let master_target = "/hls/cam1/master.m3u8?token=good&lang=en";
    let r = get(addr, master_target, "");
    assert_rewritten(&r);
    assert_eq!(r.header("content-type"), Some(MPEGURL));
    assert_eq!(hook_calls(&hook), 1);
    let master = r.text();
    let child_uri = uris(&master)
        .into_iter()
        .find(|u| u.starts_with("720p/index.m3u8"))
        .expect("the variant");
    assert!(
        child_uri.starts_with("720p/index.m3u8?v=2&hls_s="),
        "{child_uri}"
    );
    assert!(
        !master.contains("lang=en"),
        "the viewer's query is not copied onto URIs"
    );
    for u in uris(&master) {
        assert!(param(&u, "hls_sig").is_some(), "{u}");
    }
    let sid = param(&child_uri, "hls_s").expect("session id");
    let end: u64 = param(&child_uri, "hls_e")
        .and_then(|e| e.parse().ok())
        .expect("hls_e");
    let t = now();
    assert!(
        end > t + 6 * 3600 - 10 && end <= t + 6 * 3600 + 1,
        "a child playlist lives as long as the session (max_age 6h)"
    );

    // A player: the media playlist, reloaded, and everything it lists; the audio rendition.
    let child = resolve("/hls/cam1/master.m3u8", &child_uri);
    let mut requests = 1;
    for _ in 0..4 {
        let r = get(addr, &child, "");
        assert_rewritten(&r);
        requests += 1;
        let text = r.text();
        assert!(text.contains("\nhttps://cdn.elsewhere.example/ad/1.ts\n"));
        assert!(
            text.contains("URI=\"/hls/cam1/keys/k1.bin?hls_s="),
            "{text}"
        );
        assert!(text.contains("\nseg101.m4s?q=full&hls_s="), "{text}");
        // Segments live `ttl` (1m, rounded up to 30 s); the rendition report as the session.
        for u in uris(&text) {
            let Some(e) = param(&u, "hls_e").and_then(|e| e.parse::<u64>().ok()) else {
                continue;
            };
            assert_eq!(param(&u, "hls_s").as_deref(), Some(sid.as_str()), "{u}");
            if u.contains(".m3u8") {
                assert_eq!(e, end, "{u}");
            } else {
                let t = now();
                assert!(e >= t + 59 && e <= t + 91 && e % 30 == 0, "{u}: {e}");
            }
        }
        requests += fetch_media(addr, &child, &text);
    }
    let audio = resolve(
        "/hls/cam1/master.m3u8",
        &uris(&master)
            .into_iter()
            .find(|u| u.starts_with("audio/"))
            .expect("audio rendition"),
    );
    let r = get(addr, &audio, "");
    assert_rewritten(&r);
    requests += 1 + fetch_media(addr, &audio, &r.text());
    assert!(requests >= 20, "{requests} requests");
    assert_eq!(
        hook_calls(&hook),
        1,
        "{requests} requests and one hook call (its cache is off)"
    );

    // The node saw no credential and no session parameter, but the viewer's other ones.
    let seen = node.requests();
    assert!(seen.len() >= requests, "{} at the node", seen.len());
    for s in &seen {
        for p in ["hls_", "token", "sign="] {
            assert!(!s.target.contains(p), "{p} reached the node: {}", s.target);
        }
        assert_eq!(s.header("accept-encoding"), None, "{}", s.target);
    }
    assert!(seen
        .iter()
        .any(|s| s.target == "/hls/cam1/master.m3u8?lang=en"));
    assert!(seen
        .iter()
        .any(|s| s.target == "/hls/cam1/720p/seg101.m4s?q=full"));
    // …and the access log names the session but shows none of its parameters.
    common::wait_until("access lines", Duration::from_secs(10), || {
        gw.logs().matches(&format!("session={sid}")).count() >= requests
    });
    assert!(!gw.logs().contains("hls_sig"), "{}", gw.logs());
}

#[test]
fn a_live_media_playlist_is_exchanged_for_its_session_url() {
    let hook = Upstream::start(hook_script);
    let node = Upstream::start(node_script);
    let (gw, _dir) = gateway(&config(&hook.url(), &node.url()));
    let addr = gw.addr();

    // Players reload a media playlist at the URL they got it from: that is the session's.
    let r = get(addr, "/hls/cam1/720p/index.m3u8?token=good&quality=hd", "");
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let location = r.header("location").expect("location").to_string();
    assert!(
        location.starts_with("./index.m3u8?quality=hd&hls_s="),
        "{location}"
    );
    let target = resolve("/hls/cam1/720p/index.m3u8", &location);
    for _ in 0..3 {
        let r = get(addr, &target, "");
        assert_rewritten(&r);
        fetch_media(addr, &target, &r.text());
    }
    assert_eq!(hook_calls(&hook), 1);

    // A finished (VOD) playlist is answered at once; its segments live ttl + its duration.
    let r = get(addr, "/hls/cam1/vod.m3u8?token=good", "");
    assert_rewritten(&r);
    let t = now();
    for u in uris(&r.text()) {
        let e: u64 = param(&u, "hls_e")
            .and_then(|e| e.parse().ok())
            .expect("hls_e");
        assert!(e >= t + 60 + 30 - 1 && e <= t + 60 + 30 + 31, "{u}: {e}");
    }
    fetch_media(addr, "/hls/cam1/vod.m3u8", &r.text());

    // Recognised by its content type alone, without .m3u8.
    let r = get(addr, "/hls/cam1/playlist?token=good", "");
    assert_rewritten(&r);
    assert_eq!(r.header("content-type"), Some("audio/mpegurl"));
    assert!(r.text().contains("720p/index.m3u8?v=2&hls_s="));

    // HEAD: the playlist's headers, per viewer, without the node's validators.
    let r = raw_request(
        addr,
        "HEAD /hls/cam1/master.m3u8?token=good HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("etag"), None);

    // The node's other answers pass through untouched.
    let r = get(addr, "/hls/cam1/gone.m3u8?token=good", "");
    assert_eq!(r.status, 404);
    assert_eq!(r.text(), "no such playlist");
    assert_eq!(r.header("etag"), Some("\"e404\""));
    assert_eq!(r.header("content-type"), Some("text/plain"));
    // So does a ".m3u8" that is not a playlist.
    let r = get(addr, "/hls/cam1/fake.m3u8?token=good", "");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "<html>not a playlist</html>");
    // A playlist over 1 MiB is refused, not truncated.
    assert_refused(
        &get(addr, "/hls/cam1/big.m3u8?token=good", ""),
        502,
        "playlist_too_large",
    );

    // A route without hls_session: no rewriting, and session parameters are just dropped.
    let r = get(
        addr,
        "/plain/cam1/master.m3u8?token=good&hls_s=x&hls_e=1&hls_sig=00",
        "",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), MASTER);
    assert_eq!(r.header("etag"), Some("\"node-etag\""));
    assert!(node
        .requests()
        .iter()
        .all(|s| !s.target.contains("hls_") && !s.target.contains("token")));
}

#[test]
fn forged_misplaced_and_expired_sessions_are_refused() {
    let hook = Upstream::start(hook_script);
    let node = Upstream::start(node_script);
    let (gw, _dir) = gateway(&config(&hook.url(), &node.url()));
    let addr = gw.addr();

    let r = get(addr, "/hls/cam1/master.m3u8?token=good", "");
    assert_rewritten(&r);
    let child = resolve(
        "/hls/cam1/master.m3u8",
        &uris(&r.text())
            .into_iter()
            .find(|u| u.starts_with("720p/"))
            .expect("variant"),
    );
    let text = get(addr, &child, "").text();
    let seg = resolve(
        &child,
        &uris(&text)
            .into_iter()
            .find(|u| u.starts_with("seg100"))
            .expect("a segment"),
    );
    assert!(seg.starts_with("/hls/cam1/720p/seg100.m4s?hls_s="), "{seg}");
    assert_eq!(get(addr, &seg, "").status, 200);
    let before = node.requests().len();
    let calls = hook_calls(&hook);

    let q = seg.split_once('?').expect("query").1;
    let e = param(&seg, "hls_e").expect("hls_e");
    for (forged, why) in [
        (format!("/hls/cam1/720p/seg999.m4s?{q}"), "another segment"),
        (format!("/hls/cam2/720p/seg100.m4s?{q}"), "another stream"),
        (
            seg.replace(&format!("hls_e={e}"), &format!("hls_e={}", now() + 86400)),
            "a longer expiry",
        ),
        (
            seg.replace(
                &format!("hls_sig={}", param(&seg, "hls_sig").expect("sig")),
                "hls_sig=00",
            ),
            "a made-up signature",
        ),
        (
            format!(
                "/hls/cam1/720p/seg100.m4s?hls_s={}",
                param(&seg, "hls_s").expect("s")
            ),
            "no signature",
        ),
    ] {
        let r = get(addr, &forged, "");
        assert_eq!(r.status, 403, "{why}: {}", r.text());
        assert_eq!(r.json()["error"], "session_invalid", "{why}");
    }
    // Even with a valid token beside it: the session decides.
    assert_refused(
        &get(
            addr,
            &format!("/hls/cam1/720p/seg999.m4s?{q}&token=good"),
            "",
        ),
        403,
        "session_invalid",
    );
    // A session reads; it does not write.
    let r = raw_request(
        addr,
        &format!(
            "POST {seg} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
    );
    assert_refused(&r, 403, "session_invalid");
    // A genuine session past its expiry (signed here with the configured key).
    let sessions = HlsSessions::new(&HlsSessionSettings {
        secret: Some(SESSION_SECRET.as_bytes().to_vec()),
        ..HlsSessionSettings::default()
    });
    let old = Session {
        id: "0123456789abcdef".into(),
        end: 0,
    };
    let lo: IpAddr = "127.0.0.1".parse().expect("ip");
    let path = "/hls/cam1/720p/seg100.m4s";
    let expired = sessions.query(&old, path, now() - 5, lo);
    assert_refused(
        &get(addr, &format!("{path}?{expired}"), ""),
        403,
        "session_expired",
    );
    // The same key, not yet expired: admitted (so a second gateway with the same secret is).
    let fresh = sessions.query(&old, path, now() + 60, lo);
    assert_eq!(get(addr, &format!("{path}?{fresh}"), "").status, 200);
    assert_eq!(
        node.requests().len(),
        before + 1,
        "refusals never reach the node"
    );
    assert_eq!(hook_calls(&hook), calls, "nor the hook");
}

#[test]
fn a_play_token_that_expires_does_not_end_the_session() {
    let hook = Upstream::start(hook_script);
    let node = Upstream::start(node_script);
    let (gw, _dir) = gateway(&config(&hook.url(), &node.url()));
    let addr = gw.addr();
    let keys = SignedUrls::new(vec![SigningKey {
        id: "k1".into(),
        secret: SIGNING_SECRET.as_bytes().to_vec(),
    }]);
    let expires = now() + 2;
    let sign = |path: &str| {
        let q = keys
            .sign_query(None, Scope::Path(path), expires, None)
            .expect("sign");
        format!("{path}?{q}")
    };

    // A master and a live media playlist opened with a play token good for two seconds.
    let master_url = sign("/signed/cam1/master.m3u8");
    let r = get(addr, &master_url, "");
    assert_rewritten(&r);
    let master = r.text();
    let media_url = sign("/signed/cam1/720p/index.m3u8");
    let r = get(addr, &media_url, "");
    assert_eq!(r.status, 302, "{}", r.text());
    let reload = resolve(
        "/signed/cam1/720p/index.m3u8",
        r.header("location").expect("location"),
    );

    wait_until("the play token expired", Duration::from_secs(10), || {
        get(addr, &master_url, "").status == 403
    });
    assert_refused(&get(addr, &master_url, ""), 403, "signature_expired");
    assert_refused(&get(addr, &media_url, ""), 403, "signature_expired");

    // The session goes on: child playlists from the master, the reloaded media playlist, and
    // the fresh segment URLs every reload lists.
    for u in uris(&master) {
        let target = resolve("/signed/cam1/master.m3u8", &u);
        let r = get(addr, &target, "");
        assert_rewritten(&r);
        for m in uris(&r.text()).iter().filter(|m| !m.starts_with("https:")) {
            let url = resolve(&target, m);
            let r = get(addr, &url, "");
            assert_eq!(r.status, 200, "{url}: {}", r.text());
        }
    }
    let r = get(addr, &reload, "");
    assert_rewritten(&r);
    let text = r.text();
    // The path-absolute key URI is the node's; it comes back under the route's public path.
    assert!(
        text.contains("URI=\"/signed/cam1/keys/k1.bin?hls_s="),
        "{text}"
    );
    for m in uris(&text).iter().filter(|m| !m.starts_with("https:")) {
        let url = resolve(&reload, m);
        let r = get(addr, &url, "");
        assert_eq!(r.status, 200, "{url}: {}", r.text());
        if !url.contains(".m3u8") {
            assert!(r.text().starts_with("media:/hls/cam1/"), "{}", r.text());
        }
    }
}

#[test]
fn the_origins_vod_plays_with_one_token_check() {
    let origin = common::origin(&common::media_dir());
    let (gw, _dir) = gateway(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[auth]
tokens = ["s3cret"]

[[nodes]]
id = "o"
url = "http://{}"

[[routes]]
path = "/vod/{{stream}}/{{*rest}}"
action = "proxy"
to = "o"
upstream = "/files/hls/{{stream}}/{{*rest}}"
auth = "token"
hls_session = true
"#,
        origin.addr()
    ));
    let r = get(gw.addr(), "/vod/cam1/index.m3u8?token=s3cret", "");
    assert_rewritten(&r);
    let text = r.text();
    let segs = uris(&text);
    assert_eq!(segs.len(), 5, "{text}");
    let t = now();
    for u in &segs {
        assert!(u.starts_with("seg00") && u.contains(".ts?hls_s="), "{u}");
        // 5 minutes (the default ttl) plus the playlist's 10 s, rounded up to 30 s.
        let e: u64 = param(u, "hls_e")
            .and_then(|e| e.parse().ok())
            .expect("hls_e");
        assert!(e >= t + 309 && e <= t + 341, "{u}: {e}");
        let r = get(gw.addr(), &resolve("/vod/cam1/index.m3u8", u), "");
        assert_eq!(r.status, 200, "{u}");
        assert!(
            r.body.len() > 1000 && r.body[0] == 0x47,
            "an MPEG-TS segment"
        );
    }
    // Without the session, a segment is refused like any request without the token.
    assert_refused(
        &get(gw.addr(), "/vod/cam1/seg000.ts", ""),
        401,
        "unauthorized",
    );
}

/// Kills the ffmpeg we started (by its own PID) when the test ends, however it ends.
struct Pusher(Child);

impl Drop for Pusher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx-rtmp with a live `cam1` (pushed for `secs` seconds), its playlist ready.
fn live_cam1(hook: &Upstream, secs: u32) -> (NginxRtmp, Pusher) {
    let nginx = NginxRtmp::start(&format!("{}/publish", hook.url()));
    let pusher = Pusher(push(&nginx.rtmp_url("cam1"), secs, Stdio::null()));
    let playlist = nginx.hls_dir("cam1").join("index.m3u8");
    wait_until(
        "nginx-rtmp's cam1 playlist",
        Duration::from_secs(30),
        || std::fs::read_to_string(&playlist).is_ok_and(|t| t.matches(".ts").count() >= 2),
    );
    (nginx, pusher)
}

#[test]
fn a_live_stream_from_nginx_rtmp_costs_one_hook_call() {
    let hook = Upstream::start(hook_script);
    let (nginx, _pusher) = live_cam1(&hook, 30);
    let (gw, _dir) = gateway(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[auth.hook]
url = "{}/check"
cache_ttl = "0s"

[[nodes]]
id = "n1"
url = "{}"

[[routes]]
path = "/hls/{{stream}}/{{*rest}}"
action = "proxy"
to = "n1"
auth = "hook"
hls_session = true
"#,
        hook.url(),
        nginx.http_url()
    ));
    let addr = gw.addr();

    let r = get(addr, "/hls/cam1/index.m3u8?token=good", "");
    assert_eq!(r.status, 302, "{}", r.text());
    let playlist = resolve(
        "/hls/cam1/index.m3u8",
        r.header("location").expect("location"),
    );
    // A player: reload the playlist every second for 10 s, fetching each new segment.
    let mut fetched = HashSet::new();
    let mut requests = 1;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let r = get(addr, &playlist, "");
        assert_rewritten(&r);
        requests += 1;
        for u in uris(&r.text()) {
            if fetched.insert(u.split('?').next().unwrap_or("").to_string()) {
                let r = get(addr, &resolve(&playlist, &u), "");
                assert_eq!(r.status, 200, "{u}: {}", r.text());
                assert!(r.body.len() > 1000 && r.body[0] == 0x47, "MPEG-TS");
                requests += 1;
            }
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(fetched.len() >= 8, "{} segments", fetched.len());
    assert!(requests >= 20, "{requests} requests");
    assert_eq!(hook_calls(&hook), 1, "{requests} requests, one hook call");
    // nginx's own access log: every request arrived, none with a session parameter.
    let log = std::fs::read_to_string(nginx.dir().join("access.log")).expect("access log");
    assert!(log.lines().count() >= requests, "{log}");
    assert!(!log.contains("hls_") && !log.contains("token"), "{log}");
}

#[test]
fn hls_js_plays_on_after_its_play_token_expires() {
    let hook = Upstream::start(hook_script);
    let (nginx, _pusher) = live_cam1(&hook, 55);
    let (gw, _dir) = gateway(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[auth]
signing_keys = [{{ id = "k1", secret = "{SIGNING_SECRET}" }}]

[[nodes]]
id = "n1"
url = "{}"

[[routes]]
path = "/hls/{{stream}}/{{*rest}}"
action = "proxy"
to = "n1"
auth = "signed"
hls_session = true
cors = "*"        # the player's page (about:blank) is another origin
"#,
        nginx.http_url()
    ));
    // The play token: good for 10 s from now, as `streamgate sign --ttl 10s` would make it.
    let keys = SignedUrls::new(vec![SigningKey {
        id: "k1".into(),
        secret: SIGNING_SECRET.as_bytes().to_vec(),
    }]);
    let expires = now() + 10;
    let path = "/hls/cam1/index.m3u8";
    let q = keys
        .sign_query(None, Scope::Path(path), expires, None)
        .expect("sign");
    let url = gw.url(&format!("{path}?{q}"));
    // Valid up to and including the second `expires`: refused from the next one.
    let expired_at_ms = (expires + 1) * 1000;
    let v = common::browser::run_script(
        "hls_session.mjs",
        &[&url, &expired_at_ms.to_string(), "30", "25"],
        Duration::from_secs(75),
    );
    eprintln!("hls.js: {v}");
    assert_eq!(v["fatal"], serde_json::json!([]), "{v}");
    // Had playback stopped when the token did, it would have played a few seconds at most.
    let played = v["played"].as_f64().expect("played");
    assert!(played >= 25.0, "played {played} s of 30: {v}");
    // The 30 s of play ran mostly past the token's expiry (it started at most 10 s after it).
    let late = v["started_after_expiry_ms"].as_i64().expect("start");
    assert!(
        late <= 10_000,
        "playback started {late} ms after the token expired: {v}"
    );
    assert!(
        v["ok_after_expiry"].as_u64().expect("count") >= 15,
        "requests after the token expired: {v}"
    );
    assert_eq!(v["refused"], 0, "{v}");
    // The token itself is dead; what the player used after it was its session.
    assert_refused(
        &get(gw.addr(), &format!("{path}?{q}"), ""),
        403,
        "signature_expired",
    );
}
