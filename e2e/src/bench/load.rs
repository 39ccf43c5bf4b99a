//! The load generator both systems get, byte for byte: keys `key:%012d`, 100-byte values cut
//! from a pool of random bytes (incompressible), N connections each sending batches of D SETs
//! and reading their D replies (closed loop), or sending batches on a fixed schedule (open
//! loop, latency measured from the scheduled time so a stalled server is not excused).
//!
//! Every load is bounded twice, by a count and by a duration, and stops early on a shared
//! flag. Keys written are recorded in a [`KeySet`], so the correctness gate can demand the
//! exact key count afterwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::resp::{Conn, Reply, encode_into};
use crate::{Error, Result};

/// Length of every value.
pub const VALUE_BYTES: usize = 100;

/// A small, fast PRNG (xorshift64*): deterministic per seed, so runs are repeatable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A value below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A pool of random bytes values are cut from.
#[derive(Debug, Clone)]
pub struct Values(Arc<Vec<u8>>);

impl Values {
    /// A 1 MiB pool.
    pub fn new(seed: u64) -> Values {
        let mut rng = Rng::new(seed);
        let pool = (0..(1 << 20) / 8)
            .flat_map(|_| rng.next_u64().to_le_bytes())
            .collect();
        Values(Arc::new(pool))
    }

    /// A 100-byte value at a random place in the pool.
    pub fn pick(&self, rng: &mut Rng) -> &[u8] {
        let span = self.0.len().saturating_sub(VALUE_BYTES) as u64;
        let at = usize::try_from(rng.below(span)).unwrap_or(0);
        self.0.get(at..at + VALUE_BYTES).unwrap_or_default()
    }
}

/// `key:%012d`.
pub fn key(i: u64) -> String {
    format!("key:{i:012}")
}

/// The set of key indexes written: a growable bitset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet {
    bits: Vec<u64>,
}

impl KeySet {
    /// Records key `i`.
    pub fn insert(&mut self, i: u64) {
        let word = usize::try_from(i / 64).unwrap_or(usize::MAX);
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        if let Some(w) = self.bits.get_mut(word) {
            *w |= 1 << (i % 64);
        }
    }

    /// Adds every key of `other`.
    pub fn union(&mut self, other: &KeySet) {
        if other.bits.len() > self.bits.len() {
            self.bits.resize(other.bits.len(), 0);
        }
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a |= b;
        }
    }

    /// How many distinct keys.
    pub fn len(&self) -> u64 {
        self.bits.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Whether no key was written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which keys a load writes.
#[derive(Debug, Clone, Copy)]
pub enum Keys {
    /// Uniformly random in `0..space`.
    Random {
        /// The key space.
        space: u64,
    },
    /// `start..end`, client c writing start+c, start+c+clients, …
    Sequential {
        /// First index.
        start: u64,
        /// One past the last index.
        end: u64,
    },
}

/// How the primary acknowledges each batch, on top of the SETs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// Plain SETs.
    Plain,
    /// Redis: `WAIT n timeout_ms` after each batch; it must answer at least `n`.
    Wait(i64, u64),
    /// Partita: `WRITECONCERN <mode>` once per connection.
    Concern(String),
}

/// One load.
#[derive(Debug, Clone)]
pub struct Spec {
    /// RESP address of the primary.
    pub addr: String,
    /// Connections.
    pub clients: usize,
    /// SETs per batch (pipeline depth).
    pub depth: usize,
    /// Longest the load runs.
    pub duration: Duration,
    /// Most SETs in all (stops at the first batch boundary past it).
    pub max_ops: u64,
    /// Open loop at this many SETs per second in all; closed loop when `None`.
    pub rate: Option<f64>,
    /// Which keys.
    pub keys: Keys,
    /// How writes are acknowledged.
    pub ack: Ack,
    /// Seed of the keys and values.
    pub seed: u64,
    /// Timeout of one batch.
    pub op_timeout: Duration,
}

/// What a load did.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// SETs acknowledged (OK, and for WAIT enough replicas).
    pub ops: u64,
    /// SETs that failed: an error reply, or a WAIT answering fewer replicas.
    pub failed: u64,
    /// The first failure, for the report.
    pub first_failure: Option<String>,
    /// Wall time of the load.
    pub elapsed: Duration,
    /// One latency sample per batch, in nanoseconds (every SET of a batch has its latency).
    pub lat_ns: Vec<u64>,
    /// Keys written (every SET sent, acknowledged or not: a failed write may still apply).
    pub keys: KeySet,
}

impl Outcome {
    /// Fails, naming `what` ran the load, if any SET failed.
    pub fn check_no_failures(&self, what: &str) -> crate::Result<()> {
        if self.failed == 0 {
            return Ok(());
        }
        Err(crate::Error::Check(format!(
            "{what}: {} of {} SETs failed, first: {:?}",
            self.failed,
            self.ops + self.failed,
            self.first_failure
        )))
    }

    /// Acknowledged SETs per second.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn merge(&mut self, o: Outcome) {
        self.ops += o.ops;
        self.failed += o.failed;
        if self.first_failure.is_none() {
            self.first_failure = o.first_failure;
        }
        self.lat_ns.extend(o.lat_ns);
        self.keys.union(&o.keys);
    }
}

/// Runs a load to completion (its count, its duration, or `stop`).
pub async fn run(spec: &Spec, values: &Values, stop: Arc<AtomicBool>) -> Result<Outcome> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..spec.clients.max(1) {
        let (spec, values, stop) = (spec.clone(), values.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            client(c, &spec, &values, &stop, start).await
        }));
    }
    let mut out = Outcome::default();
    let mut err = None;
    for t in tasks {
        match t.await {
            Ok(Ok(o)) => out.merge(o),
            Ok(Err(e)) => err = err.or(Some(e)),
            Err(e) => err = err.or(Some(Error::Check(format!("a load client died: {e}")))),
        }
    }
    if let Some(e) = err {
        return Err(e);
    }
    out.elapsed = start.elapsed();
    Ok(out)
}

/// Runs a load in the background; set the flag to stop it early.
pub fn spawn(
    spec: Spec,
    values: Values,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Result<Outcome>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    (
        stop,
        tokio::spawn(async move { run(&spec, &values, s).await }),
    )
}

async fn client(
    c: usize,
    spec: &Spec,
    values: &Values,
    stop: &AtomicBool,
    start: Instant,
) -> Result<Outcome> {
    let mut conn = Conn::connect(&spec.addr, spec.op_timeout).await?;
    if let Ack::Concern(mode) = &spec.ack {
        let r = conn.call(&[b"WRITECONCERN", mode.as_bytes()]).await?;
        if !r.is_ok() {
            return Err(Error::Check(format!("WRITECONCERN {mode}: {}", r.text())));
        }
    }
    let clients = spec.clients.max(1) as u64;
    let depth = spec.depth.max(1);
    let per_client = spec.max_ops.div_ceil(clients);
    let interval = spec
        .rate
        .map(|r| Duration::from_secs_f64(depth as f64 * clients as f64 / r.max(1e-3)));
    let mut rng = Rng::new(spec.seed ^ ((c as u64 + 1) << 32));
    let mut next = match spec.keys {
        Keys::Sequential { start, .. } => start + c as u64,
        Keys::Random { .. } => 0,
    };
    let mut out = Outcome::default();
    let mut buf = Vec::with_capacity(depth * 160);
    let wait_cmd = match &spec.ack {
        Ack::Wait(n, ms) => {
            let mut w = Vec::new();
            encode_into(
                &mut w,
                &[b"WAIT", n.to_string().as_bytes(), ms.to_string().as_bytes()],
            );
            Some((*n, w))
        }
        _ => None,
    };
    let mut sent = 0u64;
    let mut batch_no = 0u32;
    while sent < per_client && start.elapsed() < spec.duration && !stop.load(Ordering::Relaxed) {
        buf.clear();
        let mut n = 0;
        for _ in 0..depth.min(usize::try_from(per_client - sent).unwrap_or(depth)) {
            let i = match spec.keys {
                Keys::Random { space } => rng.below(space),
                Keys::Sequential { end, .. } => {
                    if next >= end {
                        break;
                    }
                    let i = next;
                    next += clients;
                    i
                }
            };
            let k = key(i);
            encode_into(&mut buf, &[b"SET", k.as_bytes(), values.pick(&mut rng)]);
            out.keys.insert(i);
            n += 1;
        }
        if n == 0 {
            break;
        }
        if let Some((_, w)) = &wait_cmd {
            buf.extend_from_slice(w);
        }
        let t0 = match interval {
            Some(iv) => {
                let due = start + iv * batch_no;
                batch_no = batch_no.saturating_add(1);
                if due > Instant::now() {
                    tokio::time::sleep_until(due.into()).await;
                }
                due
            }
            None => Instant::now(),
        };
        conn.send(&buf).await?;
        let mut ok = 0u64;
        for _ in 0..n {
            match conn.read().await? {
                r if r.is_ok() => ok += 1,
                r => {
                    if out.first_failure.is_none() {
                        out.first_failure = Some(r.text());
                    }
                }
            }
        }
        if let Some((want, _)) = &wait_cmd {
            match conn.read().await? {
                Reply::Int(got) if got >= *want => {}
                r => {
                    if out.first_failure.is_none() {
                        out.first_failure = Some(format!("WAIT answered {}", r.text()));
                    }
                    ok = 0;
                }
            }
        }
        out.lat_ns
            .push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
        sent += n as u64;
        out.ops += ok;
        out.failed += n as u64 - ok;
    }
    Ok(out)
}

/// Writes keys `start..end` once each, pipelined over `clients` connections × `depth`: the
/// loader of W5 and W6. Any failed write is an error.
pub async fn fill(
    addr: &str,
    (start, end): (u64, u64),
    (clients, depth): (usize, usize),
    values: &Values,
    op_timeout: Duration,
) -> Result<Outcome> {
    let spec = Spec {
        addr: addr.to_string(),
        clients,
        depth,
        duration: Duration::from_secs(600),
        max_ops: end - start,
        rate: None,
        keys: Keys::Sequential { start, end },
        ack: Ack::Plain,
        seed: 7,
        op_timeout,
    };
    let out = run(&spec, values, Arc::new(AtomicBool::new(false))).await?;
    if out.failed > 0 || out.ops != end - start {
        return Err(Error::Check(format!(
            "loading {} keys: {} written, {} failed (first: {:?})",
            end - start,
            out.ops,
            out.failed,
            out.first_failure
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_have_twelve_digits() {
        assert_eq!(key(42), "key:000000000042");
        assert_eq!(key(42).len(), 16);
    }

    #[test]
    fn key_sets_count_distinct_keys_and_union() {
        let mut a = KeySet::default();
        a.insert(1);
        a.insert(1);
        a.insert(200);
        let mut b = KeySet::default();
        b.insert(200);
        b.insert(5);
        a.union(&b);
        assert_eq!(a.len(), 3);
        assert!(KeySet::default().is_empty());
    }

    #[test]
    fn values_are_100_bytes_and_vary() {
        let v = Values::new(1);
        let mut rng = Rng::new(2);
        let a = v.pick(&mut rng).to_vec();
        let b = v.pick(&mut rng).to_vec();
        assert_eq!(a.len(), VALUE_BYTES);
        assert_ne!(a, b);
    }
}
