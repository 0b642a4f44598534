//! Test nodes for the transport's unit tests: TCP listeners on 127.0.0.1 that speak just
//! enough HTTP/1.1 to put the transport in one situation each.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a [`one_answer`] node does once it has answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum After {
    /// Closes at once: a node that dies right behind its last bytes.
    Close,
    /// Holds the connection until the client closes it.
    Hold,
}

/// A node that takes one connection, reads a request (one read) and sends `answer` as it is,
/// then does as `after` says. Returns its address.
pub(crate) async fn one_answer(answer: &'static [u8], after: After) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        if let Ok((mut s, _)) = l.accept().await {
            let mut buf = vec![0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(answer).await;
            if after == After::Hold {
                let _ = s.read(&mut buf).await;
            }
        }
    });
    addr
}
