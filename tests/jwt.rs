//! JWT viewer auth end to end, against a real gateway process: HS256 tokens by header and
//! `?jwt=`, expiry, issuer and audience, the stream claim, RS256 and ES256 keys (made with
//! `openssl genpkey`) from a JWKS file and from a PEM in `public_keys`, a JWKS rotation picked up
//! by the background refresh, and a scripted node that records what reaches it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::upstream::{echo, Upstream};
use common::{gateway, get, wait_until, RawResponse};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

const SECRET: &str = "jwt-test-secret-0123456789abcdef";
const ISS: &str = "https://idp.test";
const AUD: &str = "streamgate";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A private key made by `openssl genpkey`, written to `dir/name.pem`; with its public PEM.
fn genpkey(dir: &Path, name: &str, args: &[&str]) -> (PathBuf, PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let ok = Command::new("openssl")
        .args(["genpkey", "-quiet"])
        .args(args)
        .arg("-out")
        .arg(&private)
        .status()
        .expect("openssl genpkey")
        .success();
    assert!(ok, "openssl genpkey {args:?}");
    let ok = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .expect("openssl pkey")
        .success();
    assert!(ok, "openssl pkey -pubout");
    (private, public)
}

fn rsa_key(dir: &Path, name: &str) -> EncodingKey {
    let (private, _) = genpkey(
        dir,
        name,
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    EncodingKey::from_rsa_pem(&std::fs::read(private).expect("read")).expect("rsa key")
}

fn ec_key(dir: &Path, name: &str) -> (EncodingKey, PathBuf) {
    let (private, public) = genpkey(
        dir,
        name,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let key = EncodingKey::from_ec_pem(&std::fs::read(private).expect("read")).expect("ec key");
    (key, public)
}

/// The public JWK of `key`, with `kid`.
fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
    let mut j = Jwk::from_encoding_key(key, alg).expect("jwk");
    j.common.key_id = Some(kid.into());
    j
}

/// Writes the JWKS in one step (write + rename), as a deploy tool would.
fn write_jwks(path: &Path, keys: Vec<Jwk>) {
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec(&JwkSet { keys }).expect("json");
    std::fs::write(&tmp, body).expect("write jwks");
    std::fs::rename(&tmp, path).expect("rename jwks");
}

fn token(
    alg: Algorithm,
    kid: Option<&str>,
    key: &EncodingKey,
    claims: serde_json::Value,
) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_string);
    encode(&h, &claims, key).expect("sign")
}

fn hs(claims: serde_json::Value) -> String {
    token(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(SECRET.as_bytes()).expect("key"),
        claims,
    )
}

/// Claims for `streams`, valid for a minute, from the right issuer for the right audience.
fn claims(streams: &[&str]) -> serde_json::Value {
    json!({ "sub": "viewer-1", "iss": ISS, "aud": AUD, "exp": now() + 60, "streams": streams })
}

fn config(node: &str, jwks: &Path, pem: &Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[auth.jwt]
hs256_secret = "{SECRET}"
public_keys = [{pem:?}]
jwks_file = {jwks:?}
jwks_refresh = "200ms"
issuer = "{ISS}"
audience = "{AUD}"

[[nodes]]
id = "n1"
url = "{node}"

[[routes]]
path = "/v/{{stream}}.flv"
action = "proxy"
to = "n1"
auth = "jwt"
"#,
        pem = pem.display().to_string(),
        jwks = jwks.display().to_string(),
    )
}

fn bearer(addr: std::net::SocketAddr, path: &str, t: &str) -> RawResponse {
    get(addr, path, &format!("Authorization: Bearer {t}\r\n"))
}

/// A fixture: a node, the keys, and a gateway over them.
struct Fixture {
    node: Upstream,
    gw: common::Proc,
    dir: tempfile::TempDir,
    _cfg: tempfile::TempDir,
    jwks: PathBuf,
    rsa: EncodingKey,
    ec: EncodingKey,
    pem_ec: EncodingKey,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let rsa = rsa_key(dir.path(), "rsa1");
    let (ec, _) = ec_key(dir.path(), "ec1");
    let (pem_ec, pem) = ec_key(dir.path(), "ec-pem");
    let jwks = dir.path().join("jwks.json");
    write_jwks(
        &jwks,
        vec![
            jwk(&rsa, Algorithm::RS256, "r1"),
            jwk(&ec, Algorithm::ES256, "e1"),
        ],
    );
    let node = Upstream::start(echo);
    let (gw, cfg) = gateway(&config(&node.url(), &jwks, &pem));
    Fixture {
        node,
        gw,
        dir,
        _cfg: cfg,
        jwks,
        rsa,
        ec,
        pem_ec,
    }
}

#[test]
fn hs256_by_header_and_query_never_reaches_the_node() {
    let f = fixture();
    let t = hs(claims(&["cam1"]));
    let r = bearer(f.gw.addr(), "/v/cam1.flv?x=1", &t);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = get(f.gw.addr(), &format!("/v/cam1.flv?a=2&jwt={t}&b=3"), "");
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = f.node.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].target, "/v/cam1.flv?x=1");
    assert_eq!(seen[1].target, "/v/cam1.flv?a=2&b=3");
    for s in &seen {
        assert!(s.header("authorization").is_none(), "{s:?}");
        assert!(
            !format!("{s:?}").contains(&t),
            "the JWT reached the node: {s:?}"
        );
    }
    // Neither does it reach the log (written by the access log's writer, a moment later).
    wait_until("the access line", Duration::from_secs(10), || {
        f.gw.logs().contains("/v/cam1.flv?a=2&b=3")
    });
    let logs = f.gw.logs();
    assert!(!logs.contains(&t), "the JWT is in the log");
}

#[test]
fn bad_tokens_are_401_and_other_streams_403() {
    let f = fixture();
    let addr = f.gw.addr();
    let invalid = |t: &str| {
        let r = bearer(addr, "/v/cam1.flv", t);
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.json()["error"], "unauthorized");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer error=\"invalid_token\"")
        );
    };
    let mut expired = claims(&["cam1"]);
    expired["exp"] = json!(now() - 300);
    invalid(&hs(expired));
    let mut aud = claims(&["cam1"]);
    aud["aud"] = json!("someone-else");
    invalid(&hs(aud));
    let mut iss = claims(&["cam1"]);
    iss["iss"] = json!("https://evil.test");
    invalid(&hs(iss));
    invalid("not-a-jwt");
    let forged = token(
        Algorithm::HS256,
        None,
        &EncodingKey::from_secret(b"another-secret-0123456789abcdef!").expect("key"),
        claims(&["cam1"]),
    );
    invalid(&forged);

    // No token at all: 401 without an error code in the challenge.
    let r = get(addr, "/v/cam1.flv", "");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));

    // A good token for other streams.
    let t = hs(claims(&["cam2", "event-*"]));
    let r = bearer(addr, "/v/cam1.flv", &t);
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"], "forbidden_stream");
    assert_eq!(bearer(addr, "/v/event-7.flv", &t).status, 200);
    assert_eq!(
        f.node.requests().len(),
        1,
        "only the allowed request reached the node"
    );
}

#[test]
fn rs256_and_es256_from_jwks_and_pem_and_rotation() {
    let f = fixture();
    let addr = f.gw.addr();
    let rs = token(Algorithm::RS256, Some("r1"), &f.rsa, claims(&["cam1"]));
    assert_eq!(bearer(addr, "/v/cam1.flv", &rs).status, 200);
    let es = token(Algorithm::ES256, Some("e1"), &f.ec, claims(&["cam1"]));
    assert_eq!(bearer(addr, "/v/cam1.flv", &es).status, 200);
    // The PEM in public_keys: no kid needed.
    let pem = token(Algorithm::ES256, None, &f.pem_ec, claims(&["cam1"]));
    assert_eq!(bearer(addr, "/v/cam1.flv", &pem).status, 200);
    // A kid naming one key while signed by another: refused.
    let es_as_r1 = token(Algorithm::ES256, Some("r1"), &f.ec, claims(&["cam1"]));
    assert_eq!(bearer(addr, "/v/cam1.flv", &es_as_r1).status, 401);

    // Rotation: r2 replaces r1 in the file; the refresh (200ms) picks it up.
    let rsa2 = rsa_key(f.dir.path(), "rsa2");
    let rs2 = token(Algorithm::RS256, Some("r2"), &rsa2, claims(&["cam1"]));
    assert_eq!(bearer(addr, "/v/cam1.flv", &rs2).status, 401);
    write_jwks(
        &f.jwks,
        vec![
            jwk(&rsa2, Algorithm::RS256, "r2"),
            jwk(&f.ec, Algorithm::ES256, "e1"),
        ],
    );
    wait_until("the rotated JWKS", Duration::from_secs(10), || {
        bearer(addr, "/v/cam1.flv", &rs2).status == 200
    });
    assert_eq!(bearer(addr, "/v/cam1.flv", &rs).status, 401, "r1 is gone");

    // A broken file keeps the last good keys.
    std::fs::write(&f.jwks, b"{ not json").expect("write");
    wait_until(
        "the broken JWKS to be noticed",
        Duration::from_secs(10),
        || f.gw.logs().contains("bad JWKS file"),
    );
    assert_eq!(bearer(addr, "/v/cam1.flv", &rs2).status, 200);
}

/// The shell recipe in docs/security.md mints a token the gateway accepts.
#[test]
fn openssl_recipe_from_the_docs() {
    let f = fixture();
    let script = r#"
b64() { openssl base64 -A | tr +/ -_ | tr -d =; }
H=$(printf '{"alg":"HS256","typ":"JWT"}' | b64)
P=$(printf '{"iss":"%s","aud":"%s","exp":%s,"streams":["cam1"]}' "$2" "$3" \
      $(( $(date +%s) + 3600 )) | b64)
S=$(printf '%s.%s' "$H" "$P" | openssl dgst -sha256 -hmac "$1" -binary | b64)
printf '%s' "$H.$P.$S"
"#;
    let out = Command::new("sh")
        .args(["-c", script, "sh", SECRET, ISS, AUD])
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8(out.stdout).expect("utf-8");
    let r = bearer(f.gw.addr(), "/v/cam1.flv", &t);
    assert_eq!(r.status, 200, "{t}: {}", r.text());
    assert_eq!(bearer(f.gw.addr(), "/v/cam2.flv", &t).status, 403);
}

/// `jwks_url`: fetched at start and every `jwks_refresh`; a failing identity provider keeps the
/// last good keys; a rotated set is picked up.
#[test]
fn jwks_url_fetch_failure_and_rotation() {
    use common::upstream::Reply;
    use std::sync::{Arc, Mutex};

    let dir = tempfile::tempdir().expect("tempdir");
    let r1 = rsa_key(dir.path(), "r1");
    let (e2, _) = ec_key(dir.path(), "e2");
    let served: Arc<Mutex<Option<Vec<u8>>>> = Arc::new(Mutex::new(Some(
        serde_json::to_vec(&JwkSet {
            keys: vec![jwk(&r1, Algorithm::RS256, "r1")],
        })
        .expect("json"),
    )));
    let idp = {
        let served = served.clone();
        Upstream::start(move |_| match served.lock().expect("lock").clone() {
            Some(body) => Reply::Ok {
                headers: vec![("Content-Type".into(), "application/json".into())],
                body,
            },
            None => Reply::Status {
                status: 500,
                headers: vec![],
                body: b"down".to_vec(),
            },
        })
    };
    let node = Upstream::start(echo);
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[auth.jwt]
jwks_url = "{idp}/.well-known/jwks.json"
jwks_refresh = "200ms"

[[nodes]]
id = "n1"
url = "{node}"

[[routes]]
path = "/v/{{stream}}.flv"
action = "proxy"
to = "n1"
auth = "jwt"
"#,
        idp = idp.url(),
        node = node.url(),
    );
    let (gw, _cfg) = gateway(&toml);
    let addr = gw.addr();
    let t1 = token(Algorithm::RS256, Some("r1"), &r1, claims(&["cam1"]));
    wait_until("the JWKS fetched at start", Duration::from_secs(10), || {
        bearer(addr, "/v/cam1.flv", &t1).status == 200
    });
    assert_eq!(idp.requests()[0].target, "/.well-known/jwks.json");

    // The identity provider fails: the keys stay.
    *served.lock().expect("lock") = None;
    let before = idp.requests().len();
    wait_until("failed fetches", Duration::from_secs(10), || {
        idp.requests().len() >= before + 2
    });
    assert_eq!(bearer(addr, "/v/cam1.flv", &t1).status, 200);

    // Rotation to an ES256 key: picked up once the provider is back.
    *served.lock().expect("lock") = Some(
        serde_json::to_vec(&JwkSet {
            keys: vec![jwk(&e2, Algorithm::ES256, "e2")],
        })
        .expect("json"),
    );
    let t2 = token(Algorithm::ES256, Some("e2"), &e2, claims(&["cam1"]));
    wait_until(
        "the rotated JWKS from the URL",
        Duration::from_secs(10),
        || bearer(addr, "/v/cam1.flv", &t2).status == 200,
    );
    assert_eq!(bearer(addr, "/v/cam1.flv", &t1).status, 401, "r1 is gone");
}
