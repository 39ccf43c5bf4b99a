//! The HTTP GET probe: one request with `Connection: close`, success on a 2xx or 3xx status,
//! as the kubelet's httpGet probe. Small on purpose: the node's endpoints answer a bare
//! HTTP/1.1 request, and a frozen or dead process must fail within the timeout.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most bytes of the response read: enough for the status line.
const MAX_RESPONSE: usize = 1024;

/// Whether `GET path` at `addr` answers 200..400 within `timeout`.
pub async fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, get(addr, path))
        .await
        .unwrap_or(false)
}

async fn get(addr: SocketAddr, path: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: partita-box-kubelet\r\nConnection: close\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.contains(&b'\n') && buf.len() < MAX_RESPONSE {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    }
    status_ok(&buf)
}

/// Whether the response starting with `head` has a 2xx or 3xx status.
fn status_ok(head: &[u8]) -> bool {
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    parts.next().is_some_and(|v| v.starts_with("HTTP/"))
        && parts
            .next()
            .and_then(|code| code.parse::<u16>().ok())
            .is_some_and(|code| (200..400).contains(&code))
}

#[cfg(test)]
mod tests {
    use super::status_ok;

    #[test]
    fn status_lines() {
        assert!(status_ok(b"HTTP/1.1 200 OK\r\n"));
        assert!(status_ok(b"HTTP/1.1 302 Found\r\n"));
        assert!(!status_ok(b"HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(!status_ok(b""));
        assert!(!status_ok(b"SSH-2.0\r\n"));
    }
}
