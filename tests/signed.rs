//! Signed URLs end to end, against a real gateway process: native HMAC signatures (path,
//! prefix, expiry, IP binding, key rotation, `streamgate sign`), nginx `secure_link` URLs
//! computed with openssl by nginx's published algorithm, and signed redirects verified by a real
//! nginx with `secure_link`.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use common::nginx_http::NginxHttp;
use common::{gateway, get, parse_response, RawResponse, READY_TIMEOUT};

const NEW: &str = "new-secret-0123456789abcdef";
const OLD: &str = "old-secret-0123456789abcdef";
const SL_SECRET: &str = "sl-secret-42";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The gateway: `/signed/…` (native), `/nginx/…` (secure_link), both redirecting to a node that
/// is never contacted; `/dl/…` redirects to `dl_to` with a signed `Location`.
fn config(dl_to: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[auth]
signing_keys = [{{ id = "k2", secret = "{NEW}" }}, {{ id = "k1", secret = "{OLD}" }}]
secure_link_secret_expression = "$secure_link_expires$uri$remote_addr {SL_SECRET}"
redirect_link_ttl = "5m"

[[routes]]
path = "/signed/{{*rest}}"
action = "redirect"
to = "http://127.0.0.1:9"
upstream = "/files/{{*rest}}"
auth = "signed"

[[routes]]
path = "/nginx/{{*rest}}"
action = "redirect"
to = "http://127.0.0.1:9"
upstream = "/files/{{*rest}}"
auth = "secure_link"

[[routes]]
path = "/dl/{{*rest}}"
action = "redirect"
to = "{dl_to}"
upstream = "/protected/{{*rest}}"
sign_location = true
"#
    )
}

/// `printf '%s' INPUT | openssl dgst -sha256 -hmac SECRET` (the recipe in docs/security.md).
fn openssl_hmac(secret: &str, input: &str) -> String {
    sh(
        "printf '%s' \"$1\" | openssl dgst -sha256 -hmac \"$2\" -r | cut -d' ' -f1",
        &[input, secret],
    )
}

/// nginx's secure_link value: `openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =`.
fn openssl_secure_link(input: &str) -> String {
    sh(
        "printf '%s' \"$1\" | openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =",
        &[input],
    )
}

fn sh(script: &str, args: &[&str]) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .args(args)
        .output()
        .expect("sh and openssl run");
    assert!(out.status.success(), "{script}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A native signed query, computed with openssl rather than with our code.
fn native_query(
    kid: &str,
    secret: &str,
    expires: u64,
    scope: &str,
    value: &str,
    ip: &str,
) -> String {
    let sign = openssl_hmac(secret, &format!("{kid}\n{expires}\n{scope}\n{value}\n{ip}"));
    let mut q = format!("expires={expires}&kid={kid}");
    if scope == "prefix" {
        q.push_str(&format!("&prefix={value}"));
    }
    if !ip.is_empty() {
        q.push_str(&format!("&ip={ip}"));
    }
    format!("{q}&sign={sign}")
}

fn assert_refused(r: &RawResponse, code: &str) {
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], code, "{}", r.text());
    assert!(r.header("location").is_none());
}

/// `GET path` from a given loopback source address.
fn get_from(source: [u8; 4], addr: SocketAddr, path: &str) -> RawResponse {
    let sock =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    sock.bind(&SocketAddr::from((source, 0)).into())
        .expect("bind the client to a loopback address");
    sock.connect(&addr.into()).expect("connect");
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(READY_TIMEOUT)).expect("timeout");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("write");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    parse_response(&buf)
}

/// Follows an absolute `http://host:port/…` Location with a plain GET.
fn follow(location: &str) -> RawResponse {
    let rest = location.strip_prefix("http://").expect("http Location");
    let (authority, path) = rest.split_at(rest.find('/').expect("a path"));
    let addr: SocketAddr = authority.parse().expect("an ip:port authority");
    get(addr, path, "")
}

#[test]
fn native_signatures_guard_their_path_prefix_and_time() {
    let (gw, _dir) = gateway(&config("http://127.0.0.1:9"));
    let t = now() + 600;

    // Signed for one path: accepted there, the signature never reaches the node.
    let q = native_query("k2", NEW, t, "path", "/signed/a.mp4", "");
    let r = get(gw.addr(), &format!("/signed/a.mp4?x=1&{q}"), "");
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some("http://127.0.0.1:9/files/a.mp4?x=1")
    );
    // ... and refused on another.
    assert_refused(
        &get(gw.addr(), &format!("/signed/b.mp4?{q}"), ""),
        "signature_invalid",
    );
    // Missing or tampered.
    assert_refused(&get(gw.addr(), "/signed/a.mp4", ""), "signature_invalid");
    let tampered = q.replace(&format!("expires={t}"), &format!("expires={}", t + 1));
    assert_refused(
        &get(gw.addr(), &format!("/signed/a.mp4?{tampered}"), ""),
        "signature_invalid",
    );

    // A prefix signature covers every segment under it, and nothing next to it.
    let q = native_query("k2", NEW, t, "prefix", "/signed/live/cam1/", "");
    for seg in ["index.m3u8", "seg1.ts", "seg2.ts", "sub/seg3.ts"] {
        let r = get(gw.addr(), &format!("/signed/live/cam1/{seg}?{q}"), "");
        assert_eq!(r.status, 302, "{seg}: {}", r.text());
        assert_eq!(
            r.header("location"),
            Some(format!("http://127.0.0.1:9/files/live/cam1/{seg}").as_str())
        );
    }
    assert_refused(
        &get(gw.addr(), &format!("/signed/live/cam10/seg1.ts?{q}"), ""),
        "signature_invalid",
    );

    // Expired: its own code. Rotated-out-but-still-listed key k1 still verifies.
    let q = native_query("k1", OLD, now() - 5, "path", "/signed/a.mp4", "");
    assert_refused(
        &get(gw.addr(), &format!("/signed/a.mp4?{q}"), ""),
        "signature_expired",
    );
    let q = native_query("k1", OLD, t, "path", "/signed/a.mp4", "");
    assert_eq!(
        get(gw.addr(), &format!("/signed/a.mp4?{q}"), "").status,
        302
    );
    // A key the gateway does not have.
    let q = native_query("k3", NEW, t, "path", "/signed/a.mp4", "");
    assert_refused(
        &get(gw.addr(), &format!("/signed/a.mp4?{q}"), ""),
        "signature_invalid",
    );

    // Signatures are credentials: the access log never shows them.
    let sign = native_query("k2", NEW, t, "path", "/signed/a.mp4", "");
    let sign = sign.rsplit("sign=").next().expect("sign");
    // Twelve requests above; each writes its access line when its response is done.
    common::wait_until("twelve access lines", READY_TIMEOUT, || {
        gw.logs().matches(" status=").count() >= 12
    });
    let logs = gw.logs();
    assert!(logs.contains("/signed/a.mp4"), "{logs}");
    assert!(!logs.contains(sign) && !logs.contains("sign="), "{logs}");
}

#[test]
fn an_ip_bound_signature_works_from_that_address_only() {
    let (gw, _dir) = gateway(&config("http://127.0.0.1:9"));
    let q = native_query("k2", NEW, now() + 600, "path", "/signed/a.mp4", "127.0.0.2");
    let path = format!("/signed/a.mp4?{q}");
    assert_eq!(get_from([127, 0, 0, 2], gw.addr(), &path).status, 302);
    assert_refused(
        &get_from([127, 0, 0, 1], gw.addr(), &path),
        "signature_invalid",
    );
    // Removing the binding breaks the signature.
    let unbound = path.replace("&ip=127.0.0.2", "");
    assert_refused(
        &get_from([127, 0, 0, 1], gw.addr(), &unbound),
        "signature_invalid",
    );
}

fn streamgate_sign(args: &[&str]) -> String {
    let out = Command::new(common::bin())
        .arg("sign")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run streamgate sign");
    assert!(
        out.status.success(),
        "streamgate sign {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_sign_command_makes_urls_the_gateway_accepts() {
    let (gw, dir) = gateway(&config("http://127.0.0.1:9"));
    let conf = dir.path().join("streamgate.toml");
    let conf = conf.to_str().expect("utf-8");
    let base = format!("http://{}", gw.addr());

    // From the config (newest key), printed with a base URL.
    let url = streamgate_sign(&[
        "--config",
        conf,
        "--path",
        "/signed/m.mp4",
        "--ttl",
        "1h",
        "--base",
        &base,
    ]);
    assert!(url.starts_with(&format!("{base}/signed/m.mp4?")), "{url}");
    assert!(url.contains("kid=k2"), "{url}");
    let path = &url[base.len()..];
    assert_eq!(get(gw.addr(), path, "").status, 302);

    // With --secret/--kid, a prefix, an IP.
    let url = streamgate_sign(&[
        "--secret",
        OLD,
        "--kid",
        "k1",
        "--path",
        "/signed/live/cam1/",
        "--prefix",
        "--ttl",
        "10m",
        "--ip",
        "127.0.0.1",
    ]);
    let q = url.split_once('?').expect("a query").1;
    for seg in ["index.m3u8", "seg7.ts"] {
        let r = get(gw.addr(), &format!("/signed/live/cam1/{seg}?{q}"), "");
        assert_eq!(r.status, 302, "{url}: {}", r.text());
    }
    assert_refused(
        &get_from(
            [127, 0, 0, 2],
            gw.addr(),
            &format!("/signed/live/cam1/x.ts?{q}"),
        ),
        "signature_invalid",
    );

    // Bad arguments: a clear error and exit code 2.
    let out = Command::new(common::bin())
        .args([
            "sign", "--path", "/x", "--ttl", "soon", "--secret", NEW, "--kid", "k",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ttl"));
}

#[test]
fn nginx_secure_link_urls_are_accepted() {
    let (gw, _dir) = gateway(&config("http://127.0.0.1:9"));
    let t = now() + 600;
    // An operator's existing signer: nginx's published algorithm, in a shell.
    let md5 = openssl_secure_link(&format!("{t}/nginx/v/a.mp4127.0.0.1 {SL_SECRET}"));
    let r = get(
        gw.addr(),
        &format!("/nginx/v/a.mp4?md5={md5}&expires={t}&q=2"),
        "",
    );
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some("http://127.0.0.1:9/files/v/a.mp4?q=2")
    );
    // Another path, a forged hash, a missing expiry: forged ("" in nginx).
    assert_refused(
        &get(
            gw.addr(),
            &format!("/nginx/v/b.mp4?md5={md5}&expires={t}"),
            "",
        ),
        "signature_invalid",
    );
    let forged = openssl_secure_link(&format!("{t}/nginx/v/a.mp4127.0.0.1 guess"));
    assert_refused(
        &get(
            gw.addr(),
            &format!("/nginx/v/a.mp4?md5={forged}&expires={t}"),
            "",
        ),
        "signature_invalid",
    );
    assert_refused(
        &get(gw.addr(), &format!("/nginx/v/a.mp4?md5={md5}"), ""),
        "signature_invalid",
    );
    // Bound to the address: from 127.0.0.2 it is forged.
    assert_refused(
        &get_from(
            [127, 0, 0, 2],
            gw.addr(),
            &format!("/nginx/v/a.mp4?md5={md5}&expires={t}"),
        ),
        "signature_invalid",
    );
    // Genuine but past its time: expired ("0" in nginx).
    let past = now() - 5;
    let md5 = openssl_secure_link(&format!("{past}/nginx/v/a.mp4127.0.0.1 {SL_SECRET}"));
    assert_refused(
        &get(
            gw.addr(),
            &format!("/nginx/v/a.mp4?md5={md5}&expires={past}"),
            "",
        ),
        "signature_expired",
    );
}

#[test]
fn a_signed_redirect_is_served_by_stock_nginx_secure_link() {
    let content = b"the protected movie\n";
    let nginx = NginxHttp::start(
        &format!(
            r#"root {{root}};
        location /protected/ {{
            secure_link $arg_md5,$arg_expires;
            secure_link_md5 "$secure_link_expires$uri$remote_addr {SL_SECRET}";
            if ($secure_link = "") {{ return 403; }}
            if ($secure_link = "0") {{ return 410; }}
        }}"#
        ),
        &[("protected/movie.mp4", content)],
    );
    let (gw, _dir) = gateway(&config(&nginx.url()));

    // Without the gateway's signature, nginx refuses.
    assert_eq!(get(nginx.addr(), "/protected/movie.mp4", "").status, 403);

    let r = get(gw.addr(), "/dl/movie.mp4?lang=en", "");
    assert_eq!(r.status, 302, "{}", r.text());
    let loc = r.header("location").expect("Location").to_string();
    assert!(
        loc.starts_with(&format!(
            "{}/protected/movie.mp4?lang=en&expires=",
            nginx.url()
        )),
        "{loc}"
    );
    let expires: u64 = loc
        .split("expires=")
        .nth(1)
        .and_then(|s| s.split('&').next())
        .and_then(|s| s.parse().ok())
        .expect("expires in the Location");
    assert!(
        expires >= now() + 290 && expires <= now() + 300,
        "{expires}"
    );

    // Following it: nginx's secure_link accepts and serves the file.
    let r = follow(&loc);
    assert_eq!(r.status, 200, "{loc}: {}\n{}", r.text(), nginx.error_log());
    assert_eq!(r.body, content);

    // An altered md5 or expiry: forged for nginx.
    let md5 = loc.rsplit("md5=").next().expect("md5");
    let swap = if md5.starts_with('A') { "B" } else { "A" };
    let altered = loc.replace(&format!("md5={md5}"), &format!("md5={swap}{}", &md5[1..]));
    assert_eq!(follow(&altered).status, 403);
    let later = loc.replace(
        &format!("expires={expires}"),
        &format!("expires={}", expires + 1),
    );
    assert_eq!(follow(&later).status, 403);

    // A genuine link past its time: nginx says expired.
    let past = now() - 5;
    let md5 = openssl_secure_link(&format!("{past}/protected/movie.mp4127.0.0.1 {SL_SECRET}"));
    let r = get(
        nginx.addr(),
        &format!("/protected/movie.mp4?md5={md5}&expires={past}"),
        "",
    );
    assert_eq!(r.status, 410, "{}", nginx.error_log());
}

#[test]
fn a_proxied_request_reaches_the_node_without_its_signature() {
    let up = common::upstream::Upstream::start(common::upstream::echo);
    let (gw, _dir) = gateway(&format!(
        r#"
[server]
listen = "127.0.0.1:0"

[auth]
signing_keys = [{{ id = "k2", secret = "{NEW}" }}]
secure_link_secret_expression = "$secure_link_expires$uri$remote_addr {SL_SECRET}"

[[nodes]]
id = "a"
url = "{node}"

[[routes]]
path = "/private/{{*rest}}"
action = "proxy"
to = "a"
upstream = "/files/{{*rest}}"
auth = "signed"

[[routes]]
path = "/sl/{{*rest}}"
action = "proxy"
to = "a"
upstream = "/files/{{*rest}}"
auth = "secure_link"
"#,
        node = up.url()
    ));
    let t = now() + 600;
    let q = native_query("k2", NEW, t, "prefix", "/private/hls/", "127.0.0.1");
    let r = get(gw.addr(), &format!("/private/hls/seg1.ts?a=1&{q}&b=2"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    let md5 = openssl_secure_link(&format!("{t}/sl/m.mp4127.0.0.1 {SL_SECRET}"));
    let r = get(
        gw.addr(),
        &format!("/sl/m.mp4?md5={md5}&expires={t}&c=3"),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // A refused request never reaches the node.
    assert_refused(
        &get(gw.addr(), "/private/hls/seg1.ts?a=1", ""),
        "signature_invalid",
    );
    let targets: Vec<String> = up.requests().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/files/hls/seg1.ts?a=1&b=2", "/files/m.mp4?c=3"]);
}
