//! A small pipelined RESP client over a tokio `TcpStream`.
//!
//! The benchmark drives Redis and Partita with the same client, so that neither gains from a
//! faster or slower driver. It is written here rather than taken from a crate because the
//! generators need exact control over pipelining (a batch is one `write_all`, then its replies
//! are read in order) and a reusable read buffer, and because a RESP subset of ~150 lines is
//! easier to audit than a client library's connection management.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::{Error, Result};

/// One RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK` and other simple strings.
    Simple(String),
    /// `-ERR …`: an error reply (returned, not raised, so callers can count it).
    Error(String),
    /// `:n`.
    Int(i64),
    /// `$n …`, `None` for the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*n …`, `None` for the null array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// Whether this is `+OK`.
    pub fn is_ok(&self) -> bool {
        matches!(self, Reply::Simple(s) if s == "OK")
    }

    /// The reply as text: simple strings, bulk strings and errors (prefixed `-`).
    pub fn text(&self) -> String {
        match self {
            Reply::Simple(s) => s.clone(),
            Reply::Error(e) => format!("-{e}"),
            Reply::Int(n) => n.to_string(),
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Bulk(None) | Reply::Array(None) => "(nil)".into(),
            Reply::Array(Some(items)) => {
                let parts: Vec<String> = items.iter().map(Reply::text).collect();
                format!("[{}]", parts.join(", "))
            }
        }
    }
}

/// Appends one command, as a RESP array of bulk strings, to `out`.
pub fn encode_into(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// One command, encoded.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, args);
    out
}

/// One connection: a buffered reader and a writer over the two halves of a socket.
pub struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    line: Vec<u8>,
    timeout: Duration,
    addr: String,
}

impl Conn {
    /// Connects to `addr` (host:port) with TCP_NODELAY; every later read or write fails after
    /// `timeout`.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Conn> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout {
                what: format!("connecting to {addr}"),
                after: timeout,
            })?
            .map_err(|source| Error::Io {
                what: format!("connecting to {addr}"),
                source,
            })?;
        stream.set_nodelay(true).map_err(|source| Error::Io {
            what: format!("setting TCP_NODELAY on {addr}"),
            source,
        })?;
        let (r, w) = stream.into_split();
        Ok(Conn {
            reader: BufReader::with_capacity(64 * 1024, r),
            writer: w,
            line: Vec::with_capacity(128),
            timeout,
            addr: addr.to_string(),
        })
    }

    /// Sends already encoded commands.
    pub async fn send(&mut self, data: &[u8]) -> Result<()> {
        match tokio::time::timeout(self.timeout, self.writer.write_all(data)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(Error::Io {
                what: format!("writing to {}", self.addr),
                source,
            }),
            Err(_) => Err(self.timed_out("a write")),
        }
    }

    /// Reads one reply.
    pub async fn read(&mut self) -> Result<Reply> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.read_inner()).await {
            Ok(r) => r,
            Err(_) => Err(self.timed_out("a reply")),
        }
    }

    /// Sends one command and reads its reply.
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Reply> {
        self.send(&encode(args)).await?;
        self.read().await
    }

    /// Like [`Conn::call`], but an error reply is an error.
    pub async fn call_ok(&mut self, args: &[&[u8]]) -> Result<Reply> {
        match self.call(args).await? {
            Reply::Error(e) => Err(Error::Check(format!(
                "{} on {}: -{e}",
                String::from_utf8_lossy(args.first().copied().unwrap_or_default()),
                self.addr
            ))),
            r => Ok(r),
        }
    }

    fn timed_out(&self, what: &str) -> Error {
        Error::Timeout {
            what: format!("{what} from {}", self.addr),
            after: self.timeout,
        }
    }

    fn closed(&self) -> Error {
        Error::Io {
            what: format!("reading from {}", self.addr),
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ),
        }
    }

    async fn read_line(&mut self) -> Result<()> {
        self.line.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.line)
            .await
            .map_err(|source| Error::Io {
                what: format!("reading from {}", self.addr),
                source,
            })?;
        if n < 3 || !self.line.ends_with(b"\r\n") {
            return Err(self.closed());
        }
        self.line.truncate(n - 2);
        Ok(())
    }

    fn line_int(&self) -> Result<i64> {
        std::str::from_utf8(self.line.get(1..).unwrap_or_default())
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                Error::Check(format!(
                    "bad RESP line from {}: {:?}",
                    self.addr,
                    String::from_utf8_lossy(&self.line)
                ))
            })
    }

    async fn read_inner(&mut self) -> Result<Reply> {
        // Arrays are read iteratively (a stack of partly filled arrays), so no boxed futures.
        let mut stack: Vec<(usize, Vec<Reply>)> = Vec::new();
        loop {
            self.read_line().await?;
            let text =
                || String::from_utf8_lossy(self.line.get(1..).unwrap_or_default()).into_owned();
            let mut item = match self.line.first() {
                Some(b'+') => Reply::Simple(text()),
                Some(b'-') => Reply::Error(text()),
                Some(b':') => Reply::Int(self.line_int()?),
                Some(b'$') => {
                    let n = self.line_int()?;
                    if n < 0 {
                        Reply::Bulk(None)
                    } else {
                        let mut buf = vec![0u8; usize::try_from(n).unwrap_or(0) + 2];
                        self.reader
                            .read_exact(&mut buf)
                            .await
                            .map_err(|source| Error::Io {
                                what: format!("reading from {}", self.addr),
                                source,
                            })?;
                        buf.truncate(buf.len() - 2);
                        Reply::Bulk(Some(buf))
                    }
                }
                Some(b'*') => {
                    let n = self.line_int()?;
                    if n < 0 {
                        Reply::Array(None)
                    } else if n == 0 {
                        Reply::Array(Some(Vec::new()))
                    } else {
                        let n = usize::try_from(n).unwrap_or(0);
                        stack.push((n, Vec::with_capacity(n)));
                        continue;
                    }
                }
                _ => {
                    return Err(Error::Check(format!(
                        "unexpected RESP line from {}: {}",
                        self.addr,
                        String::from_utf8_lossy(&self.line)
                    )));
                }
            };
            loop {
                let Some((want, items)) = stack.last_mut() else {
                    return Ok(item);
                };
                items.push(item);
                if items.len() < *want {
                    break;
                }
                let Some((_, done)) = stack.pop() else {
                    return Err(self.closed());
                };
                item = Reply::Array(Some(done));
            }
        }
    }
}

/// Parses `INFO` text into its `key:value` fields (comments and blank lines skipped).
pub fn parse_info(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim_end().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn encodes_a_command_as_bulk_strings() {
        assert_eq!(
            encode(&[b"SET", b"k", b"vv"]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nvv\r\n".to_vec()
        );
    }

    #[test]
    fn parses_info_fields() {
        let f = parse_info("# Replication\r\nrole:master\r\nmaster_repl_offset:42\r\n\r\n");
        assert_eq!(f.get("role").unwrap(), "master");
        assert_eq!(f.get("master_repl_offset").unwrap(), "42");
    }

    #[tokio::test]
    async fn reads_every_reply_kind_from_a_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(b"+OK\r\n-ERR no\r\n:7\r\n$3\r\nabc\r\n$-1\r\n*2\r\n:1\r\n*1\r\n+x\r\n")
                .await
                .unwrap();
        });
        let mut c = Conn::connect(&addr, Duration::from_secs(5)).await.unwrap();
        assert!(c.call(&[b"PING"]).await.unwrap().is_ok());
        assert_eq!(c.read().await.unwrap(), Reply::Error("ERR no".into()));
        assert_eq!(c.read().await.unwrap(), Reply::Int(7));
        assert_eq!(c.read().await.unwrap(), Reply::Bulk(Some(b"abc".to_vec())));
        assert_eq!(c.read().await.unwrap(), Reply::Bulk(None));
        assert_eq!(
            c.read().await.unwrap(),
            Reply::Array(Some(vec![
                Reply::Int(1),
                Reply::Array(Some(vec![Reply::Simple("x".into())]))
            ]))
        );
        server.await.unwrap();
    }
}
