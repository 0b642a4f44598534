//! Media-server hooks, parsed: what SRS `http_hooks` and nginx-rtmp `notify` send when a
//! publisher starts or stops, turned into one [`HookEvent`].
//!
//! Neither server tells us its own address, so the node comes from the hook URL (`?node=ID`),
//! not from the payload. Both are parsed leniently where the servers differ between versions
//! (SRS sends `client_id` as an integer in 3.x and as a string since 4.x; newer versions add
//! keys) and strictly where it matters (a publish without a stream name is refused). The
//! publisher's token travels in its own query string: SRS forwards it as `param`
//! (`"?token=…"`), nginx-rtmp appends the publisher's query args to the form body.

use serde::Deserialize;

/// What a hook asks the registry to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookAction {
    /// A publisher started: the node now holds the stream.
    Publish,
    /// A publisher stopped: the node no longer holds the stream.
    Unpublish,
    /// A publisher is still there (nginx-rtmp `update`, SRS `on_hls`, both periodic): renews
    /// the stream's lease on the node, never creates a record.
    Renew,
    /// Anything else (play, connect, dvr…): accepted and ignored, so operators can point every
    /// hook at us without breaking their server.
    Ignore(String),
}

/// One hook call, reduced to what the registry needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEvent {
    pub action: HookAction,
    /// The stream name (SRS `stream`, nginx-rtmp `name`); empty for ignored calls.
    pub stream: String,
    /// The application the stream was published to (both servers' `app`), if sent.
    pub app: Option<String>,
    /// SRS's virtual host (`vhost`), for logs; nginx-rtmp has none.
    pub vhost: Option<String>,
    /// The `token` the publisher put in its URL, if any.
    pub token: Option<String>,
    /// The media server's client id, for logs only.
    pub client: String,
}

/// Why a hook payload could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HookError {
    #[error("hook body is not valid SRS JSON: {0}")]
    SrsJson(String),
    #[error("hook body has no {0:?} field")]
    Missing(&'static str),
}

/// SRS's `client_id`: an integer up to SRS 3, a string since SRS 4.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ClientId {
    Num(u64),
    Str(String),
}

/// The part of SRS's hook JSON we use; unknown keys are ignored on purpose, since every SRS
/// release adds some (`server_id`, `service_id`, `stream_url`, `stream_id`…).
#[derive(Debug, Deserialize)]
struct SrsHook {
    action: String,
    #[serde(default)]
    stream: Option<String>,
    /// The publisher's query string, `"?token=pub1"` or `""`.
    #[serde(default)]
    param: Option<String>,
    #[serde(default)]
    client_id: Option<ClientId>,
    #[serde(default)]
    app: Option<String>,
    #[serde(default)]
    vhost: Option<String>,
}

/// Parses an SRS `http_hooks` body.
pub fn parse_srs(body: &[u8]) -> Result<HookEvent, HookError> {
    let h: SrsHook = serde_json::from_slice(body).map_err(|e| HookError::SrsJson(e.to_string()))?;
    let client = match h.client_id {
        Some(ClientId::Num(n)) => n.to_string(),
        Some(ClientId::Str(s)) => s,
        None => String::new(),
    };
    let action = match h.action.as_str() {
        "on_publish" => HookAction::Publish,
        "on_unpublish" => HookAction::Unpublish,
        "on_hls" => HookAction::Renew,
        other => HookAction::Ignore(other.to_string()),
    };
    let stream = match (&action, h.stream) {
        (HookAction::Ignore(_), s) => s.unwrap_or_default(),
        (_, Some(s)) if !s.is_empty() => s,
        _ => return Err(HookError::Missing("stream")),
    };
    let token = h
        .param
        .as_deref()
        .and_then(|p| query_value(p.trim_start_matches('?'), "token"));
    Ok(HookEvent {
        action,
        stream,
        token,
        client,
        app: h.app.filter(|a| !a.is_empty()),
        vhost: h.vhost.filter(|v| !v.is_empty()),
    })
}

/// Parses an nginx-rtmp `notify` form body (`call=publish&name=…&app=…&addr=…&clientid=…`
/// followed by the publisher's own query args).
pub fn parse_nginx_rtmp(body: &[u8]) -> Result<HookEvent, HookError> {
    // nginx-rtmp writes its own fields first and the publisher's args after them, so the first
    // occurrence of a key is the server's word and a publisher cannot override `name` or `call`.
    let mut call = None;
    let mut name = None;
    let mut token = None;
    let mut client = None;
    let mut app = None;
    for (k, v) in form_urlencoded::parse(body) {
        let slot = match k.as_ref() {
            "call" => &mut call,
            "app" => &mut app,
            "name" => &mut name,
            "token" => &mut token,
            "clientid" => &mut client,
            _ => continue,
        };
        if slot.is_none() {
            *slot = Some(v.into_owned());
        }
    }
    let call = call.ok_or(HookError::Missing("call"))?;
    let action = match call.as_str() {
        "publish" => HookAction::Publish,
        "publish_done" => HookAction::Unpublish,
        "update" => HookAction::Renew,
        other => HookAction::Ignore(other.to_string()),
    };
    let stream = match (&action, name) {
        (HookAction::Ignore(_), n) => n.unwrap_or_default(),
        (_, Some(n)) if !n.is_empty() => n,
        _ => return Err(HookError::Missing("name")),
    };
    Ok(HookEvent {
        action,
        stream,
        token,
        client: client.unwrap_or_default(),
        app: app.filter(|a: &String| !a.is_empty()),
        vhost: None,
    })
}

/// Whether an SRS-style hook answer accepts: SRS itself takes a hook's 200 answer as "go on"
/// only when its body is `0` or a JSON object whose `code` is 0 (whitespace around either is
/// fine); anything else, including an empty body, refuses. Used where *we* ask an SRS-style
/// hook (`auth.hook.format = "srs"`); our own hook endpoints answer `{"code":0}`.
pub fn srs_accepts(status: u16, body: &[u8]) -> bool {
    if status != 200 {
        return false;
    }
    let text = match std::str::from_utf8(body) {
        Ok(t) => t.trim(),
        Err(_) => return false,
    };
    text == "0"
        || serde_json::from_str::<serde_json::Value>(text)
            .is_ok_and(|v| v.is_object() && v.get("code").and_then(|c| c.as_i64()) == Some(0))
}

/// The first value of `key` in a query string, percent-decoded.
pub fn query_value(query: &str, key: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SRS 5's `on_publish`, as it sends it (string `client_id`, extra keys).
    const SRS5_PUBLISH: &str = r#"{"server_id":"vid-0xk989d","service_id":"lwzjf5v2","action":"on_publish","client_id":"341w361a","ip":"127.0.0.1","vhost":"__defaultVhost__","app":"live","tcUrl":"rtmp://127.0.0.1:1935/live","stream":"livestream","param":"?token=pub1","stream_url":"/live/livestream","stream_id":"vid-124q9y3"}"#;
    /// SRS 3's `on_unpublish` (integer `client_id`, no `server_id`).
    const SRS3_UNPUBLISH: &str = r#"{"action":"on_unpublish","client_id":107,"ip":"127.0.0.1","vhost":"__defaultVhost__","app":"live","stream":"livestream","param":""}"#;

    #[test]
    fn srs_both_shapes() {
        let e = parse_srs(SRS5_PUBLISH.as_bytes()).expect("srs5");
        assert_eq!(e.action, HookAction::Publish);
        assert_eq!(e.stream, "livestream");
        assert_eq!(e.token.as_deref(), Some("pub1"));
        assert_eq!(e.client, "341w361a");
        assert_eq!(e.app.as_deref(), Some("live"));
        assert_eq!(e.vhost.as_deref(), Some("__defaultVhost__"));
        let e = parse_srs(SRS3_UNPUBLISH.as_bytes()).expect("srs3");
        assert_eq!(e.action, HookAction::Unpublish);
        assert_eq!(e.client, "107");
        assert_eq!(e.token, None);
        let e = parse_srs(br#"{"action":"on_play","client_id":1,"stream":"x"}"#).expect("play");
        assert_eq!(e.action, HookAction::Ignore("on_play".into()));
        assert!(matches!(
            parse_srs(b"{\"action\":\"on_publish\"}"),
            Err(HookError::Missing("stream"))
        ));
        let e = parse_srs(br#"{"action":"on_hls","client_id":1,"stream":"x"}"#).expect("hls");
        assert_eq!(e.action, HookAction::Renew);
        assert!(matches!(parse_srs(b"not json"), Err(HookError::SrsJson(_))));
        assert!(matches!(
            parse_srs(b"{\"stream\":\"x\"}"),
            Err(HookError::SrsJson(_))
        ));
    }

    #[test]
    fn srs_answers() {
        for ok in ["0", " 0\n", r#"{"code":0}"#, r#"{"code": 0, "data": "x"}"#] {
            assert!(srs_accepts(200, ok.as_bytes()), "{ok}");
        }
        for no in [
            "",
            "1",
            "00",
            r#"{"code":1}"#,
            r#"{"code":"0"}"#,
            "{}",
            "[0]",
            "ok",
        ] {
            assert!(!srs_accepts(200, no.as_bytes()), "{no}");
        }
        assert!(!srs_accepts(201, b"0"));
        assert!(!srs_accepts(500, br#"{"code":0}"#));
        assert!(!srs_accepts(200, b"\xff"));
    }

    #[test]
    fn nginx_rtmp_form() {
        let body = b"call=publish&addr=127.0.0.1&clientid=7&app=live&flashver=FMLE%2F3.0&swfurl=&tcurl=rtmp%3A%2F%2F127.0.0.1%3A1935%2Flive&pageurl=&name=cam1&type=live&token=pub1&name=evil";
        let e = parse_nginx_rtmp(body).expect("publish");
        assert_eq!(e.action, HookAction::Publish);
        assert_eq!(
            e.stream, "cam1",
            "the server's name wins over a publisher arg"
        );
        assert_eq!(e.token.as_deref(), Some("pub1"));
        assert_eq!(e.client, "7");
        assert_eq!(e.app.as_deref(), Some("live"));
        let e = parse_nginx_rtmp(b"call=publish_done&name=cam1&app=live").expect("done");
        assert_eq!(e.action, HookAction::Unpublish);
        assert!(matches!(
            parse_nginx_rtmp(b"call=publish&app=live"),
            Err(HookError::Missing("name"))
        ));
        assert!(matches!(
            parse_nginx_rtmp(b"name=x"),
            Err(HookError::Missing("call"))
        ));
        let e = parse_nginx_rtmp(b"call=update&name=cam1&app=live").expect("update");
        assert_eq!(e.action, HookAction::Renew);
        let e = parse_nginx_rtmp(b"call=play&name=cam1").expect("play");
        assert_eq!(e.action, HookAction::Ignore("play".into()));
    }
}
