//! A client for the gateway's registry API, as an operator or a node agent would use it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::RawResponse;

/// The admin bearer header the registry tests configure (`[admin] token = "adm1n"`).
pub const ADMIN: &str = "Authorization: Bearer adm1n\r\n";

/// Sends `method path` with `headers` (lines ending in \r\n) and `body`, reads the response.
pub fn send(addr: SocketAddr, method: &str, path: &str, headers: &str, body: &[u8]) -> RawResponse {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(super::READY_TIMEOUT))
        .expect("timeout");
    // The gateway may answer (and stop reading) before a refused body is all sent.
    let _ = s.write_all(&req);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    super::parse_response(&buf)
}

/// `PUT /api/v1/nodes/{id}` (register or heartbeat); `ttl` is JSON (a number or a string).
pub fn put_node(addr: SocketAddr, id: &str, url: &str, ttl: &str) -> RawResponse {
    let body = format!(r#"{{"url":"{url}","ttl":{ttl}}}"#);
    send(
        addr,
        "PUT",
        &format!("/api/v1/nodes/{id}"),
        ADMIN,
        body.as_bytes(),
    )
}

/// `PUT /api/v1/streams/{name}` announcing `name` on `node`.
pub fn put_stream(addr: SocketAddr, name: &str, node: &str) -> RawResponse {
    let body = format!(r#"{{"node":"{node}"}}"#);
    send(
        addr,
        "PUT",
        &format!("/api/v1/streams/{name}"),
        ADMIN,
        body.as_bytes(),
    )
}
