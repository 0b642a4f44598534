//! Shutdown with a client that never finishes: the drain deadline, not the client, decides when
//! the gateway is gone.

mod common;

use std::time::{Duration, Instant};

use common::upstream::{Reply, Upstream};
use common::{gateway, wait_until};

#[test]
fn the_drain_deadline_closes_a_stalled_client() {
    // A node that streams forever, and a viewer that stops reading: the response can never
    // finish by itself.
    let up = Upstream::start(|_| Reply::Endless {
        chunk: vec![7u8; 64 * 1024],
        every: Duration::from_millis(5),
    });
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
drain_timeout = "1s"
send_timeout = "60s"

[[nodes]]
id = "a"
url = "{}"

[[routes]]
path = "/vod/{{*rest}}"
action = "proxy"
to = "a"
upstream = "/files/{{*rest}}"
"#,
        up.url()
    );
    let (mut gw, _dir) = gateway(&toml);
    let stalled = common::stalled_get(gw.addr(), "/vod/forever.bin");
    wait_until(
        "the request to reach the node",
        Duration::from_secs(10),
        || !up.requests().is_empty(),
    );
    let asked = Instant::now();
    gw.sigterm();
    // send_timeout (60 s) would close it much later; only the 1 s drain deadline closes it now.
    let st = gw
        .wait_exit(Duration::from_secs(20))
        .expect("the gateway exits although a client never finished");
    assert!(st.success(), "{st:?}");
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "the client got its drain window before being closed"
    );
    assert!(
        !common::drain_until_closed(stalled, Duration::from_secs(10)),
        "the stalled download was cut, not completed"
    );
}
