//! A panic while handling one request fails only that request: other requests, including a
//! stream already flowing, go on. Runs the real server and gateway in-process so a handler that
//! panics can be put in front of it.

mod common;

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use common::get;
use common::upstream::{Reply, Upstream};
use http::{Request, Response};
use streamgate::body::Body;
use streamgate::body::RequestBody;
use streamgate::gateway::Gateway;
use streamgate::registry::{self, MemoryRegistry};
use streamgate::server::{self, Handler, ServeOptions};
use streamgate::upstream_path::BaseUrl;
use tokio_util::sync::CancellationToken;

/// Panics on `/panic`, otherwise hands the request to the real gateway.
struct PanicOnPath(Arc<Gateway>);

impl Handler for PanicOnPath {
    async fn call(
        &self,
        req: Request<RequestBody>,
        conn: streamgate::server::ConnInfo,
    ) -> Response<Body> {
        if req.uri().path() == "/panic" {
            panic!("handler bug");
        }
        self.0.call(req, conn).await
    }
}

#[test]
fn a_panicking_request_does_not_disturb_others() {
    let up = Upstream::start(|_| Reply::Endless {
        chunk: vec![1u8; 512],
        every: Duration::from_millis(10),
    });
    let settings = streamgate::config::parse(&format!(
        "[[nodes]]\nid = \"a\"\nurl = \"{}\"\n[[routes]]\npath = \"/vod/{{*rest}}\"\naction = \"proxy\"\nto = \"a\"\n",
        up.url()
    ))
    .expect("config");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let shutdown = CancellationToken::new();
    let running = rt.block_on(async {
        let reg = Arc::new(MemoryRegistry::default());
        registry::load_static(reg.as_ref(), &settings.nodes).expect("static");
        let gw = Gateway::new(
            &settings,
            reg,
            BaseUrl::parse("http://gw").expect("url"),
            shutdown.clone(),
        );
        server::start(
            &["127.0.0.1:0".parse().expect("addr")],
            Arc::new(PanicOnPath(Arc::new(gw))),
            ServeOptions::default(),
            shutdown.clone(),
        )
        .await
        .expect("start")
    });
    let addr = running.addrs[0];
    let (head, mut stream, _) = common::open_stream(addr, "/vod/stream");
    assert_eq!(head.status, 200);
    let mut buf = [0u8; 4096];
    assert!(stream.read(&mut buf).expect("read") > 0);

    let r = get(addr, "/panic", "");
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"], "internal");

    // The stream keeps flowing and new requests are served.
    let mut after = 0;
    while after < 64 * 1024 {
        let n = stream.read(&mut buf).expect("stream continues");
        assert!(n > 0, "stream ended after the panic");
        after += n;
    }
    let r = get(addr, "/nothing-here", "");
    assert_eq!(r.status, 404);
    shutdown.cancel();
    drop(stream);
    rt.block_on(async { tokio::time::timeout(Duration::from_secs(10), running.task).await })
        .expect("drained")
        .expect("server task");
}
