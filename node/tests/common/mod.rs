//! Helpers for tests that run real `partita-node` processes on loopback: start one on
//! ephemeral ports and learn its addresses from its ready line, stop it with SIGTERM or SIGKILL,
//! and talk RESP to it with a small blocking client. Every wait has a deadline.

#![allow(dead_code)]

pub mod cluster;

use bytes::BytesMut;
use partita_node::server::resp::codec::encode_command;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running node process.
pub struct Node {
    child: Option<Child>,
    pub resp: SocketAddr,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    pub stderr_path: PathBuf,
}

/// Starts `partita-node --standalone` on ephemeral loopback ports with `extra` flags, and waits
/// (at most 60 s) until it prints its ready line.
pub fn start(data_dir: &Path, extra: &[&str]) -> Node {
    try_start(data_dir, extra).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`start`], but returns the node's stderr instead of panicking when it exits early.
pub fn try_start(data_dir: &Path, extra: &[&str]) -> Result<Node, String> {
    try_start_with(data_dir, true, extra)
}

/// Starts `partita-node` as [`start`] does; `standalone` says whether to pass `--standalone`.
/// Without it the node holds no role until an admin call (or its role files) gives it one.
pub fn try_start_with(data_dir: &Path, standalone: bool, extra: &[&str]) -> Result<Node, String> {
    let stderr_path = data_dir.with_extension(format!("stderr-{}", unique()));
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_partita-node"));
    if standalone {
        command.arg("--standalone");
    }
    // --in-memory and --data-dir exclude each other.
    if !extra.contains(&"--in-memory") {
        command.arg("--data-dir").arg(data_dir);
    }
    let mut child = command
        .args([
            "--resp-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn partita-node");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.starts_with("partita-node ready") {
                let _ = tx.send(line);
            }
        }
    });
    let line = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            return Err(format!("partita-node did not become ready:\n{err}"));
        }
    };
    let field = |name: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{name}=")))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
    };
    Ok(Node {
        resp: field("resp"),
        grpc: field("grpc"),
        http: field("http"),
        child: Some(child),
        data_dir: data_dir.to_path_buf(),
        stderr_path,
    })
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

impl Node {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGKILL, and reap.
    pub fn kill(mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and wait (at most `deadline`) for a clean exit; returns whether it exited 0.
    pub fn terminate(mut self, deadline: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let pid = c.id() as i32;
        send_signal(pid, libc::SIGTERM);
        let until = Instant::now() + deadline;
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.success();
            }
            if Instant::now() > until {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the node logged.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// A RESP connection to the node.
    pub fn client(&self) -> Client {
        Client::connect(self.resp)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends a signal to a process this test started.
pub fn send_signal(pid: i32, signal: i32) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// A RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The bulk string as text, or panics.
    pub fn text(&self) -> String {
        match self {
            Reply::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Reply::Simple(s) => s.clone(),
            other => panic!("not a string: {other:?}"),
        }
    }
}

/// A blocking RESP client with a read timeout.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects, retrying for at most 10 s.
    pub fn connect(addr: SocketAddr) -> Self {
        let until = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(s) => break s,
                Err(e) if Instant::now() < until => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("connect {addr}: {e}"),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Self {
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        }
    }

    /// Sends one command without waiting.
    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) -> std::io::Result<()> {
        let mut buf = BytesMut::new();
        encode_command(args, &mut buf);
        self.writer.write_all(&buf)
    }

    /// Sends `commands` in one write, so the node reads them as one pipelined batch, and reads
    /// their replies.
    pub fn pipeline(&mut self, commands: &[&[&str]]) -> Vec<Reply> {
        let mut buf = BytesMut::new();
        for c in commands {
            encode_command(c, &mut buf);
        }
        self.writer.write_all(&buf).expect("send the pipeline");
        commands
            .iter()
            .map(|c| {
                self.read()
                    .unwrap_or_else(|e| panic!("reply to {c:?}: {e}"))
            })
            .collect()
    }

    /// Reads one reply.
    pub fn read(&mut self) -> std::io::Result<Reply> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(1);
        Ok(match kind {
            "+" => Reply::Simple(rest.into()),
            "-" => Reply::Error(rest.into()),
            ":" => Reply::Int(rest.parse().map_err(std::io::Error::other)?),
            "$" => {
                let n: i64 = rest.parse().map_err(std::io::Error::other)?;
                if n < 0 {
                    Reply::Bulk(None)
                } else {
                    let mut data = vec![0; n as usize + 2];
                    self.reader.read_exact(&mut data)?;
                    data.truncate(n as usize);
                    Reply::Bulk(Some(data))
                }
            }
            "*" => {
                let n: i64 = rest.parse().map_err(std::io::Error::other)?;
                if n < 0 {
                    Reply::Array(None)
                } else {
                    let mut items = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        items.push(self.read()?);
                    }
                    Reply::Array(Some(items))
                }
            }
            other => return Err(std::io::Error::other(format!("bad reply type {other:?}"))),
        })
    }

    /// Sends a command and reads its reply.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> std::io::Result<Reply> {
        self.send(args)?;
        self.read()
    }

    /// Like `call`, panicking on I/O errors.
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        self.call(args).expect("command")
    }
}

/// Waits until `f` returns true, checking every 20 ms, for at most `deadline`.
pub fn wait_until(deadline: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !f() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The path of a tool, or a clear failure saying how to install it.
pub fn tool(name: &str) -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} is not installed: run `.ci/setup` (it installs Debian's redis-tools)");
}

/// GET `path` over HTTP/1.0; the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect http");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// A metric's value from a Prometheus text exposition (summing label sets that match `prefix`).
pub fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}
