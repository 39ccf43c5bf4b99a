//! Proxy mode (`--redirect proxy`, the default): a command for a slot whose primary is another
//! node is sent to that node, and its reply is passed back unchanged. Clients that know nothing
//! of clusters (plain `redis-cli`, most libraries) then reach every key through any node.
//! Cluster-aware clients still read CLUSTER SLOTS and go straight to the primary, saving the hop.
//!
//! - **One hop at most.** Proxy connections name themselves [`PROXY_CLIENT_NAME`] (CLIENT
//!   SETNAME). A node never forwards what such a connection sends; it answers `-MOVED`. So two
//!   nodes whose maps disagree cannot pass a command back and forth, and the client sees the
//!   redirect.
//! - **Bounded.** Each upstream node has at most [`MAX_IDLE`] idle connections kept. Connecting
//!   and each round trip have time limits, and a reply larger than `max-reply-bytes` is refused.
//!   A failure is an `-ERR` naming the node and the reason, and its connection is dropped.
//! - **The client's write concern holds.** Upstream connections are kept per write concern
//!   and timeout, and set them (WRITECONCERN) when opened, so a proxied write is acknowledged
//!   only when the primary has met the concern the client asked for. WAIT cannot see what the
//!   primary's replicas acknowledged of a proxied write, so on a connection that proxied a
//!   write it answers 0, never more than it can vouch for.
//! - **Stale connections are avoided.** A pooled connection whose close this node has already
//!   seen (the other node restarted, say) is dropped before a command is sent on it. A close
//!   not yet seen still fails that one command with an error; a command is never sent twice.

use crate::proto::WriteConcern;
use crate::server::resp::codec::encode_command;
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The client name of a proxy connection. A node does not forward its commands.
pub const PROXY_CLIENT_NAME: &[u8] = b"partita-proxy";
/// Idle connections kept per upstream node, whatever their write concern.
pub const MAX_IDLE: usize = 8;
/// How long connecting to an upstream node may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one forwarded command may take, the primary's write concern wait included.
pub const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(30);
/// Deepest nesting of arrays accepted in a reply.
const MAX_DEPTH: usize = 32;

/// Most commands in flight to one upstream node at once; idle connections are counted apart.
pub const MAX_ACTIVE: usize = 64;

/// What an upstream connection is for: the node, and the write concern it was set to.
type PoolKey = (String, i32, u128);

/// Upstream connections, by node and write concern.
pub struct Proxy {
    idle: Mutex<HashMap<PoolKey, Vec<TcpStream>>>,
    active: Mutex<HashMap<String, std::sync::Arc<tokio::sync::Semaphore>>>,
    max_reply_bytes: usize,
}

impl Proxy {
    /// A proxy refusing replies over `max_reply_bytes`.
    pub fn new(max_reply_bytes: usize) -> Self {
        Self {
            idle: Mutex::new(HashMap::new()),
            active: Mutex::new(HashMap::new()),
            max_reply_bytes,
        }
    }

    /// Sends `args` to the node at `addr` under write concern `concern` (with its timeout) and
    /// appends its reply, unchanged, to `out`.
    pub async fn forward(
        &self,
        addr: &str,
        args: &[Bytes],
        concern: (WriteConcern, Duration),
        out: &mut BytesMut,
    ) -> Result<(), String> {
        let slots = std::sync::Arc::clone(
            self.active
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(addr.to_string())
                .or_insert_with(|| std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_ACTIVE))),
        );
        let _slot = tokio::time::timeout(ROUND_TRIP_TIMEOUT, slots.acquire_owned())
            .await
            .map_err(|_| format!("all {MAX_ACTIVE} connections to the node stayed busy"))?
            .map_err(|e| e.to_string())?;
        // The timeout matters only above ONE.
        let wait = if concern.0 == WriteConcern::One {
            0
        } else {
            concern.1.as_millis()
        };
        let key: PoolKey = (addr.to_string(), concern.0 as i32, wait);
        // Long enough for the primary to wait out the client's write concern and answer.
        let limit = ROUND_TRIP_TIMEOUT.max(concern.1 + CONNECT_TIMEOUT);
        let mut stream = loop {
            let pooled = self
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(&key)
                .and_then(Vec::pop);
            match pooled {
                Some(s) if alive(&s) => break s,
                Some(_) => continue,
                None => break self.connect(addr, concern).await?,
            }
        };
        let reply = tokio::time::timeout(limit, self.round_trip(&mut stream, args))
            .await
            .map_err(|_| format!("no reply within {limit:?}"))??;
        out.extend_from_slice(&reply);
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let kept_for_addr: usize = idle
            .iter()
            .filter(|(k, _)| k.0 == addr)
            .map(|(_, v)| v.len())
            .sum();
        if kept_for_addr < MAX_IDLE {
            idle.entry(key).or_default().push(stream);
        }
        Ok(())
    }

    async fn connect(
        &self,
        addr: &str,
        concern: (WriteConcern, Duration),
    ) -> Result<TcpStream, String> {
        let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting took over {CONNECT_TIMEOUT:?}"))?
            .map_err(|e| format!("connecting: {e}"))?;
        let _ = stream.set_nodelay(true);
        let name = [
            Bytes::from_static(b"CLIENT"),
            Bytes::from_static(b"SETNAME"),
            Bytes::from_static(PROXY_CLIENT_NAME),
        ];
        let reply = tokio::time::timeout(CONNECT_TIMEOUT, self.round_trip(&mut stream, &name))
            .await
            .map_err(|_| "naming the connection timed out".to_string())??;
        if reply.as_ref() != b"+OK\r\n" {
            return Err(format!(
                "naming the connection: {}",
                String::from_utf8_lossy(&reply).trim_end()
            ));
        }
        if concern.0 != WriteConcern::One {
            let name = concern.0.as_str_name().trim_start_matches("WRITE_CONCERN_");
            let set = [
                Bytes::from_static(b"WRITECONCERN"),
                Bytes::from(name.to_string()),
                Bytes::from_static(b"TIMEOUT"),
                Bytes::from(concern.1.as_millis().to_string()),
            ];
            let reply = tokio::time::timeout(CONNECT_TIMEOUT, self.round_trip(&mut stream, &set))
                .await
                .map_err(|_| "setting the write concern timed out".to_string())??;
            if reply.as_ref() != b"+OK\r\n" {
                return Err(format!(
                    "setting the write concern: {}",
                    String::from_utf8_lossy(&reply).trim_end()
                ));
            }
        }
        Ok(stream)
    }

    async fn round_trip(&self, stream: &mut TcpStream, args: &[Bytes]) -> Result<Bytes, String> {
        let mut request = BytesMut::new();
        encode_command(args, &mut request);
        stream
            .write_all(&request)
            .await
            .map_err(|e| format!("sending: {e}"))?;
        let mut buf = BytesMut::with_capacity(4096);
        loop {
            if let Some(len) = reply_len(&buf, self.max_reply_bytes)? {
                if len != buf.len() {
                    return Err("the node sent more than one reply".into());
                }
                return Ok(buf.freeze());
            }
            let n = stream
                .read_buf(&mut buf)
                .await
                .map_err(|e| format!("reading: {e}"))?;
            if n == 0 {
                return Err("the node closed the connection".into());
            }
        }
    }
}

/// Whether a pooled connection is still open: nothing may be waiting on it (every reply was
/// read), so readable data or end of stream means the other side closed it or broke protocol.
fn alive(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// The length of the complete RESP2 reply at the start of `buf`, `None` if more bytes are
/// needed, or why it cannot be one (malformed, nested too deep, or over `max` bytes).
pub fn reply_len(buf: &[u8], max: usize) -> Result<Option<usize>, String> {
    let end = scan(buf, 0, 0)?;
    match end {
        Some(n) if n > max => Err(format!("the reply exceeds max-reply-bytes ({max})")),
        None if buf.len() > max => Err(format!("the reply exceeds max-reply-bytes ({max})")),
        other => Ok(other),
    }
}

/// Where the reply starting at `at` ends, if it is complete.
fn scan(buf: &[u8], at: usize, depth: usize) -> Result<Option<usize>, String> {
    if depth > MAX_DEPTH {
        return Err("the reply nests too deep".into());
    }
    let Some(rest) = buf.get(at..) else {
        return Ok(None);
    };
    let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let Some(&kind) = rest.first() else {
        return Ok(None);
    };
    let after_line = at + line_end + 2;
    let number = || -> Result<i64, String> {
        std::str::from_utf8(&rest[1..line_end])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "a malformed length in the reply".to_string())
    };
    match kind {
        b'+' | b'-' | b':' => Ok(Some(after_line)),
        b'$' => match number()? {
            -1 => Ok(Some(after_line)),
            n if n >= 0 => {
                let end = after_line + n as usize + 2;
                Ok((buf.len() >= end).then_some(end))
            }
            _ => Err("a malformed bulk length in the reply".into()),
        },
        b'*' => match number()? {
            -1 => Ok(Some(after_line)),
            n if n >= 0 => {
                let mut pos = after_line;
                for _ in 0..n {
                    match scan(buf, pos, depth + 1)? {
                        Some(next) => pos = next,
                        None => return Ok(None),
                    }
                }
                Ok(Some(pos))
            }
            _ => Err("a malformed array length in the reply".into()),
        },
        other => Err(format!("an unknown reply type {:?}", char::from(other))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_replies_are_measured_and_partial_ones_wait() {
        let max = 1 << 20;
        assert_eq!(reply_len(b"+OK\r\n", max), Ok(Some(5)));
        assert_eq!(reply_len(b"-MOVED 1 a:1\r\n", max), Ok(Some(14)));
        assert_eq!(reply_len(b":42\r\n", max), Ok(Some(5)));
        assert_eq!(reply_len(b"$-1\r\n", max), Ok(Some(5)));
        assert_eq!(reply_len(b"$5\r\nhello\r\n", max), Ok(Some(11)));
        assert_eq!(reply_len(b"$5\r\nhel", max), Ok(None));
        assert_eq!(reply_len(b"*2\r\n$1\r\na\r\n:1\r\n", max), Ok(Some(15)));
        assert_eq!(reply_len(b"*2\r\n$1\r\na\r\n", max), Ok(None));
        assert_eq!(reply_len(b"*-1\r\n", max), Ok(Some(5)));
        assert_eq!(reply_len(b"", max), Ok(None));
    }

    #[tokio::test]
    async fn a_pooled_connection_the_other_side_closed_is_noticed_before_use() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert!(alive(&client), "an open, quiet connection is usable");
        drop(server);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while alive(&client) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the close was never seen"
            );
            client.readable().await.unwrap();
        }
    }

    #[test]
    fn malformed_deep_or_oversized_replies_are_refused() {
        assert!(reply_len(b"$x\r\n", 100).is_err());
        assert!(reply_len(b"?\r\n", 100).is_err());
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2);
        assert!(
            reply_len(deep.as_bytes(), 1 << 20)
                .unwrap_err()
                .contains("deep")
        );
        assert!(
            reply_len(b"$5\r\nhello\r\n", 8)
                .unwrap_err()
                .contains("max-reply-bytes")
        );
        assert!(
            reply_len(&[b'$'; 64], 8)
                .unwrap_err()
                .contains("max-reply-bytes")
        );
    }
}
