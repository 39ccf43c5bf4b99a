//! The state machine of one partition: keys in key order, their expiries, and the position of
//! the last applied entry.
//!
//! Keys live in a hash map for point reads and writes (one probe, as Redis does) and in a sorted
//! index for everything that needs key order (SCAN, KEYS, range reads). The index is built at the
//! first ordered read and kept from then on; it changes only when a key is created or removed,
//! so overwriting an existing key never walks it.
//!
//! Two kinds of function live here, and neither does I/O or reads a clock:
//! - `apply` replays a log entry. It accepts only the entry at exactly the next offset, with a
//!   valid checksum (invariant 2), so every copy that applies the same log holds the same state.
//! - `decide_*` turn a client request into the command to log (or none), given the state and
//!   the time. Expiry is decided here, on the primary, and logged as a delete, so replicas never
//!   expire keys on their own. Conditional writes (NX, XX), KEEPTTL and INCR are resolved here
//!   too, so what is logged is always a plain, idempotent put or delete.

use super::Position;
use super::snapshot::{SnapshotData, SnapshotMeta};
use crate::Error;
use crate::proto::{
    self, ClearCommand, Command, CommandBatch, DeleteCommand, ExpireCommand, KeyValue, LogEntry,
    PutCommand, command::Cmd,
};
use bytes::Bytes;
use prost::Message;
use sha1::{Digest, Sha1};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;

/// A key's value and expiry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Item {
    /// The value.
    pub value: Bytes,
    /// Absolute expiry in Unix milliseconds; 0 for none.
    pub expire_at_ms: i64,
}

impl Item {
    fn live(&self, now_ms: i64) -> bool {
        self.expire_at_ms == 0 || self.expire_at_ms > now_ms
    }
}

/// A key in the sorted index. It orders exactly as the bytes do, but compares eight bytes at a
/// time inline instead of calling `memcmp` for every step down the tree: keys often share long
/// prefixes (`user:000000…`), and a tree step is a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OrderedKey(Bytes);

impl Ord for OrderedKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        compare_keys(&self.0, &other.0)
    }
}

impl PartialOrd for OrderedKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::borrow::Borrow<[u8]> for OrderedKey {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

/// Lexicographic byte order, eight bytes at a time (big-endian words keep the byte order).
fn compare_keys(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let mut i = 0;
    while i + 8 <= a.len() && i + 8 <= b.len() {
        let mut x = [0u8; 8];
        let mut y = [0u8; 8];
        x.copy_from_slice(&a[i..i + 8]);
        y.copy_from_slice(&b[i..i + 8]);
        let (x, y) = (u64::from_be_bytes(x), u64::from_be_bytes(y));
        if x != y {
            return x.cmp(&y);
        }
        i += 8;
    }
    a[i..].cmp(&b[i..])
}

/// Keys in key order. The index is built at the first ordered read (SCAN, KEYS, a range scan):
/// a partition that is only written and read by key never pays for it, as Redis keeps no order
/// at all. Once built, new keys wait in `pending` and join the sorted set in batches (sorted
/// first, so the tree is walked along cached paths), and always before an ordered read: writes
/// of new keys stay cheap and reads still see every key in order.
#[derive(Debug, Clone, Default)]
struct OrderIndex {
    /// Whether the index is built and kept up to date; until then it is empty.
    active: bool,
    settled: BTreeSet<OrderedKey>,
    pending: Vec<Bytes>,
    /// A key was removed that was not in `settled`, so it may still be in `pending`: the next
    /// settle must check each pending key is still held.
    removed_pending: bool,
}

/// New keys waiting before they join the sorted set.
const MAX_PENDING_KEYS: usize = 4096;

impl OrderIndex {
    /// Builds the index if it is not built yet, then moves every pending key that is still
    /// held into the sorted set.
    fn settle<V, S: std::hash::BuildHasher>(&mut self, map: &HashMap<Bytes, V, S>) {
        if !self.active {
            let mut keys: Vec<Bytes> = map.keys().cloned().collect();
            keys.sort_unstable_by(|a, b| compare_keys(a, b));
            // Built from sorted keys in one pass.
            self.settled = keys.into_iter().map(OrderedKey).collect();
            self.pending.clear();
            self.removed_pending = false;
            self.active = true;
            return;
        }
        if self.pending.is_empty() {
            return;
        }
        let mut pending = std::mem::take(&mut self.pending);
        pending.sort_unstable_by(|a, b| compare_keys(a, b));
        pending.dedup();
        let check = std::mem::take(&mut self.removed_pending);
        for key in pending {
            if !check || map.contains_key(&key) {
                self.settled.insert(OrderedKey(key));
            }
        }
    }
}

/// When a set applies (SET NX / XX).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetCondition {
    /// Always.
    #[default]
    Always,
    /// Only if the key does not exist.
    IfAbsent,
    /// Only if the key exists.
    IfPresent,
}

/// What a set does to the key's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetExpiry {
    /// Remove any expiry (plain SET).
    #[default]
    Clear,
    /// Keep the existing expiry (SET KEEPTTL).
    Keep,
    /// Expire at this Unix millisecond.
    At(i64),
}

/// The decision for a set.
#[derive(Debug, Clone, PartialEq)]
pub struct SetOutcome {
    /// Whether the condition held.
    pub applied: bool,
    /// The previous live value (for SET … GET).
    pub previous: Option<Bytes>,
    /// The command to log; `None` when nothing changes.
    pub command: Option<Command>,
}

/// Why INCR failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncrError {
    /// The value is not a base-10 64-bit integer.
    NotAnInteger,
    /// The result would not fit in 64 bits.
    Overflow,
}

/// A key's time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    /// No such key (TTL -2).
    Missing,
    /// The key never expires (TTL -1).
    Persistent,
    /// Milliseconds left.
    Millis(i64),
}

/// The state of one partition.
#[derive(Debug, Clone, Default)]
pub struct KvState {
    partition: u32,
    map: HashMap<Bytes, Item, foldhash::fast::RandomState>,
    order: RefCell<OrderIndex>,
    expiries: BTreeSet<(i64, Bytes)>,
    last: Position,
    epoch_history: Vec<(u64, u64)>,
    bytes: u64,
}

fn put(key: Bytes, value: Bytes, expire_at_ms: i64) -> Command {
    Command {
        cmd: Some(Cmd::Put(PutCommand {
            key: key.to_vec(),
            value: value.to_vec(),
            expire_at_ms,
        })),
    }
}

fn delete(key: &[u8]) -> Command {
    Command {
        cmd: Some(Cmd::Delete(DeleteCommand { key: key.to_vec() })),
    }
}

impl KvState {
    /// An empty partition.
    pub fn new(partition: u32) -> Self {
        Self {
            partition,
            ..Self::default()
        }
    }

    /// The state a snapshot holds.
    pub fn from_snapshot(partition: u32, snapshot: SnapshotData) -> Self {
        let mut state = Self::new(partition);
        state.last = snapshot.meta.at;
        state.epoch_history = snapshot.meta.epoch_history;
        for (key, item) in snapshot.items {
            state.insert(key, item);
        }
        state
    }

    /// A snapshot of the state, consistent at [`KvState::last`]. Values are shared, not copied.
    pub fn snapshot(&self) -> SnapshotData {
        SnapshotData {
            meta: SnapshotMeta {
                at: self.last,
                epoch_history: self.epoch_history.clone(),
            },
            items: self
                .map
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    /// The partition id.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Position of the last applied entry.
    pub fn last(&self) -> Position {
        self.last
    }

    /// The epoch history: (epoch, first offset written in it), oldest first.
    pub fn epoch_history(&self) -> &[(u64, u64)] {
        &self.epoch_history
    }

    /// Keys held, including expired keys not yet deleted (as Redis's DBSIZE counts them).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Keys with an expiry.
    pub fn expiring(&self) -> usize {
        self.expiries.len()
    }

    /// Bytes of keys and values held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Applies the entry at exactly the next offset; anything else changes nothing.
    pub fn apply(&mut self, entry: &LogEntry) -> Result<(), Error> {
        let expected = self.last.offset + 1;
        if entry.offset != expected {
            return Err(Error::OffsetGap {
                partition: self.partition,
                expected,
                got: entry.offset,
            });
        }
        let corrupt = |reason: String| Error::CorruptEntry {
            partition: self.partition,
            offset: entry.offset,
            reason,
        };
        if entry.epoch < self.last.epoch {
            return Err(corrupt(format!(
                "epoch {} is older than the previous entry's {}",
                entry.epoch, self.last.epoch
            )));
        }
        let crc = crc32c::crc32c(&entry.command);
        if crc != entry.crc32c {
            return Err(corrupt(format!(
                "command checksum {crc:08x} does not match {:08x}",
                entry.crc32c
            )));
        }
        let command = Command::decode(entry.command.as_slice())
            .map_err(|e| corrupt(format!("undecodable command: {e}")))?;
        self.advance(Position::new(entry.epoch, entry.offset), command);
        Ok(())
    }

    /// Applies `command` as the next entry, at `epoch`, and returns its position: the primary's
    /// path, for a command it decided itself and has not encoded yet.
    pub fn apply_next(&mut self, epoch: u64, command: Command) -> Position {
        let at = Position::new(epoch.max(self.last.epoch), self.last.offset + 1);
        self.advance(at, command);
        at
    }

    fn advance(&mut self, at: Position, command: Command) {
        self.apply_command(command);
        if self.epoch_history.last().is_none_or(|&(e, _)| e < at.epoch) {
            self.epoch_history.push((at.epoch, at.offset));
        }
        self.last = at;
    }

    fn apply_command(&mut self, command: Command) {
        match command.cmd {
            Some(Cmd::Put(p)) => self.insert(
                Bytes::from(p.key),
                Item {
                    value: Bytes::from(p.value),
                    expire_at_ms: p.expire_at_ms,
                },
            ),
            Some(Cmd::Delete(d)) => {
                self.remove(&d.key);
            }
            Some(Cmd::Expire(e)) => {
                if let Some(mut item) = self.remove(&e.key) {
                    item.expire_at_ms = e.expire_at_ms;
                    self.insert(Bytes::from(e.key), item);
                }
            }
            Some(Cmd::Batch(b)) => {
                for c in b.commands {
                    self.apply_command(c);
                }
            }
            Some(Cmd::Clear(_)) => {
                self.map.clear();
                let order = self.order.get_mut();
                order.settled.clear();
                order.pending.clear();
                order.removed_pending = false;
                self.expiries.clear();
                self.bytes = 0;
            }
            Some(Cmd::EpochMarker(_)) | None => {}
        }
    }

    fn insert(&mut self, key: Bytes, item: Item) {
        use std::collections::hash_map::Entry;
        // One probe of the map; the sorted index and the key's clone only for new keys and
        // expiries.
        self.bytes += (key.len() + item.value.len()) as u64;
        let expire_at_ms = item.expire_at_ms;
        match self.map.entry(key) {
            Entry::Occupied(mut e) => {
                let old = e.insert(item);
                self.bytes -= (e.key().len() + old.value.len()) as u64;
                if old.expire_at_ms != expire_at_ms {
                    if old.expire_at_ms != 0 {
                        self.expiries.remove(&(old.expire_at_ms, e.key().clone()));
                    }
                    if expire_at_ms != 0 {
                        self.expiries.insert((expire_at_ms, e.key().clone()));
                    }
                }
            }
            Entry::Vacant(e) => {
                let order = self.order.get_mut();
                if order.active {
                    order.pending.push(e.key().clone());
                }
                if expire_at_ms != 0 {
                    self.expiries.insert((expire_at_ms, e.key().clone()));
                }
                e.insert(item);
            }
        }
        if self.order.get_mut().pending.len() >= MAX_PENDING_KEYS {
            self.order.get_mut().settle(&self.map);
        }
    }

    fn remove(&mut self, key: &[u8]) -> Option<Item> {
        let (key, item) = self.map.remove_entry(key)?;
        // A key still pending is dropped when the index settles, as it is no longer held.
        let order = self.order.get_mut();
        if order.active && !order.settled.remove(key.as_ref()) {
            order.removed_pending = true;
        }
        self.bytes -= (key.len() + item.value.len()) as u64;
        if item.expire_at_ms != 0 {
            self.expiries.remove(&(item.expire_at_ms, key));
        }
        Some(item)
    }

    /// The live item at `key`: `None` if absent or expired at `now_ms`.
    pub fn get(&self, key: &[u8], now_ms: i64) -> Option<&Item> {
        self.map.get(key).filter(|i| i.live(now_ms))
    }

    /// Whether a live key exists.
    pub fn contains(&self, key: &[u8], now_ms: i64) -> bool {
        self.get(key, now_ms).is_some()
    }

    /// The key's time to live.
    pub fn ttl(&self, key: &[u8], now_ms: i64) -> Ttl {
        match self.get(key, now_ms) {
            None => Ttl::Missing,
            Some(i) if i.expire_at_ms == 0 => Ttl::Persistent,
            Some(i) => Ttl::Millis(i.expire_at_ms - now_ms),
        }
    }

    /// Decides a set; `return_previous` asks for the previous value (SET … GET).
    pub fn decide_set(
        &self,
        key: Bytes,
        value: Bytes,
        condition: SetCondition,
        expiry: SetExpiry,
        return_previous: bool,
        now_ms: i64,
    ) -> SetOutcome {
        // A plain SET (no condition, no KEEPTTL, no GET) needs nothing from the current value:
        // skip the lookup, the hot path of every write benchmark.
        if condition == SetCondition::Always && !return_previous && expiry != SetExpiry::Keep {
            let expire_at_ms = match expiry {
                SetExpiry::At(at) => at,
                _ => 0,
            };
            let command = if expire_at_ms != 0 && expire_at_ms <= now_ms {
                self.map.contains_key(&key).then(|| delete(&key))
            } else {
                Some(put(key, value, expire_at_ms))
            };
            return SetOutcome {
                applied: true,
                previous: None,
                command,
            };
        }
        let current = self.get(&key, now_ms);
        let applies = match condition {
            SetCondition::Always => true,
            SetCondition::IfAbsent => current.is_none(),
            SetCondition::IfPresent => current.is_some(),
        };
        let previous = current.map(|i| i.value.clone());
        if !applies {
            return SetOutcome {
                applied: false,
                previous,
                command: None,
            };
        }
        let expire_at_ms = match expiry {
            SetExpiry::Clear => 0,
            SetExpiry::Keep => current.map_or(0, |i| i.expire_at_ms),
            SetExpiry::At(at) => at,
        };
        // An expiry already in the past deletes the key, as Redis does for SET with EX/PX.
        let command = if expire_at_ms != 0 && expire_at_ms <= now_ms {
            self.map.contains_key(&key).then(|| delete(&key))
        } else {
            Some(put(key, value, expire_at_ms))
        };
        SetOutcome {
            applied: true,
            previous,
            command,
        }
    }

    /// Decides a delete: whether a live key existed, and the command (also for a key that is
    /// expired but still held, which is then removed).
    pub fn decide_delete(&self, key: &[u8], now_ms: i64) -> (bool, Option<Command>) {
        let existed = self.contains(key, now_ms);
        (existed, self.map.contains_key(key).then(|| delete(key)))
    }

    /// Decides INCRBY: the new value and the command.
    pub fn decide_incr(
        &self,
        key: Bytes,
        delta: i64,
        now_ms: i64,
    ) -> Result<(i64, Command), IncrError> {
        let (current, expire_at_ms) = match self.get(&key, now_ms) {
            None => (0, 0),
            Some(item) => (parse_i64(&item.value)?, item.expire_at_ms),
        };
        let next = current.checked_add(delta).ok_or(IncrError::Overflow)?;
        let value = Bytes::from(next.to_string());
        Ok((next, put(key, value, expire_at_ms)))
    }

    /// Decides EXPIRE/PEXPIRE to an absolute time: whether the key exists, and the command. A
    /// time already past deletes the key.
    pub fn decide_expire(&self, key: &[u8], at_ms: i64, now_ms: i64) -> (bool, Option<Command>) {
        if !self.contains(key, now_ms) {
            return (false, None);
        }
        if at_ms <= now_ms {
            return (true, Some(delete(key)));
        }
        let command = Command {
            cmd: Some(Cmd::Expire(ExpireCommand {
                key: key.to_vec(),
                expire_at_ms: at_ms,
            })),
        };
        (true, Some(command))
    }

    /// Decides PERSIST: whether an expiry was removed, and the command.
    pub fn decide_persist(&self, key: &[u8], now_ms: i64) -> (bool, Option<Command>) {
        match self.get(key, now_ms) {
            Some(item) if item.expire_at_ms != 0 => {
                let command = Command {
                    cmd: Some(Cmd::Expire(ExpireCommand {
                        key: key.to_vec(),
                        expire_at_ms: 0,
                    })),
                };
                (true, Some(command))
            }
            _ => (false, None),
        }
    }

    /// Decides a batch of gets, puts and deletes on keys of this partition. The operations run
    /// in order, each seeing the ones before it; their writes become one logged batch, so the
    /// batch applies atomically on every copy.
    pub fn decide_batch(
        &self,
        ops: &[proto::BatchOp],
        max_reply_bytes: usize,
        now_ms: i64,
    ) -> Result<(Vec<proto::BatchResult>, Option<Command>), usize> {
        use proto::{batch_op::Op, batch_result::Result as R};
        // What earlier operations of the batch did to a key: Some(item) written, None deleted.
        let mut view: HashMap<&[u8], Option<Item>> = HashMap::new();
        let mut commands = Vec::new();
        let mut results = Vec::with_capacity(ops.len());
        let current = |view: &HashMap<&[u8], Option<Item>>, key: &[u8]| -> Option<Item> {
            match view.get(key) {
                Some(seen) => seen.clone(),
                None => self.get(key, now_ms).cloned(),
            }
        };
        let mut reply_bytes = 0usize;
        for op in ops {
            let result = match &op.op {
                Some(Op::Get(g)) => {
                    let item = current(&view, &g.key);
                    reply_bytes += item.as_ref().map_or(0, |i| i.value.len());
                    if reply_bytes > max_reply_bytes {
                        return Err(reply_bytes);
                    }
                    R::Get(proto::GetResponse {
                        found: item.is_some(),
                        ttl_ms: item
                            .as_ref()
                            .filter(|i| i.expire_at_ms != 0)
                            .map_or(-1, |i| i.expire_at_ms - now_ms),
                        value: item.map(|i| i.value.to_vec()).unwrap_or_default(),
                        info: None,
                    })
                }
                Some(Op::Put(put)) => {
                    let existing = current(&view, &put.key);
                    let applies = match proto::PutCondition::try_from(put.condition) {
                        Ok(proto::PutCondition::IfAbsent) => existing.is_none(),
                        Ok(proto::PutCondition::IfPresent) => existing.is_some(),
                        _ => true,
                    };
                    if applies {
                        let expire_at_ms = if put.keep_ttl {
                            existing.map_or(0, |i| i.expire_at_ms)
                        } else if put.ttl_ms > 0 {
                            now_ms.saturating_add(i64::try_from(put.ttl_ms).unwrap_or(i64::MAX))
                        } else {
                            0
                        };
                        let item = Item {
                            value: Bytes::from(put.value.clone()),
                            expire_at_ms,
                        };
                        view.insert(&put.key, Some(item));
                        commands.push(Command {
                            cmd: Some(Cmd::Put(PutCommand {
                                key: put.key.clone(),
                                value: put.value.clone(),
                                expire_at_ms,
                            })),
                        });
                    }
                    R::Put(proto::PutResponse {
                        applied: applies,
                        ack: None,
                    })
                }
                Some(Op::Delete(d)) => {
                    let existed = current(&view, &d.key).is_some();
                    let held = view.get(d.key.as_slice()).is_some_and(Option::is_some)
                        || (!view.contains_key(d.key.as_slice())
                            && self.map.contains_key(d.key.as_slice()));
                    if held {
                        commands.push(delete(&d.key));
                    }
                    view.insert(&d.key, None);
                    R::Delete(proto::DeleteResponse { existed, ack: None })
                }
                None => continue,
            };
            results.push(proto::BatchResult {
                result: Some(result),
            });
        }
        let command = match commands.len() {
            0 => None,
            1 => commands.pop(),
            _ => Some(Command {
                cmd: Some(Cmd::Batch(CommandBatch { commands })),
            }),
        };
        Ok((results, command))
    }

    /// Decides FLUSHALL for this partition.
    pub fn decide_clear(&self) -> Option<Command> {
        (!self.map.is_empty()).then_some(Command {
            cmd: Some(Cmd::Clear(ClearCommand {})),
        })
    }

    /// Keys whose expiry is due at `now_ms`, at most `max`, soonest first. The primary deletes
    /// them through the log.
    pub fn due_expirations(&self, now_ms: i64, max: usize) -> Vec<Bytes> {
        self.expiries
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .take(max)
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// The command that deletes `keys` together, or `None` when there are none.
    pub fn delete_all(keys: &[Bytes]) -> Option<Command> {
        match keys {
            [] => None,
            [one] => Some(delete(one)),
            many => Some(Command {
                cmd: Some(Cmd::Batch(CommandBatch {
                    commands: many.iter().map(|k| delete(k)).collect(),
                })),
            }),
        }
    }

    /// Up to `limit` live keys from `start` (inclusive) to `end` (exclusive, empty = no bound)
    /// that match `filter`, and where the next page starts (`None` when done).
    pub fn scan(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        now_ms: i64,
        filter: impl FnMut(&[u8]) -> bool,
    ) -> (Vec<KeyValue>, Option<Bytes>) {
        self.scan_page(start, end, limit, usize::MAX, true, now_ms, filter)
    }

    /// Like [`KvState::scan`], also stopping once the page holds `max_bytes` of keys and values
    /// (it may pass the budget by the one entry that reached it), and copying values only when
    /// `with_values`. An empty or reversed range is an empty page.
    #[allow(
        clippy::too_many_arguments,
        reason = "a page request has this many parts"
    )]
    pub fn scan_page(
        &self,
        start: &[u8],
        end: &[u8],
        limit: usize,
        max_bytes: usize,
        with_values: bool,
        now_ms: i64,
        mut filter: impl FnMut(&[u8]) -> bool,
    ) -> (Vec<KeyValue>, Option<Bytes>) {
        if !end.is_empty() && end <= start {
            return (Vec::new(), None);
        }
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        let mut out = Vec::new();
        // Visit at most a bounded number of keys per page, so a selective pattern cannot make
        // one call walk the whole partition.
        let visit_budget = limit.saturating_mul(10).max(1000);
        let mut bytes = 0usize;
        self.order.borrow_mut().settle(&self.map);
        let order = self.order.borrow();
        for (visited, key) in order
            .settled
            .range::<[u8], _>((Bound::Included(start), upper))
            .enumerate()
        {
            let key = &key.0;
            if out.len() >= limit || visited >= visit_budget || bytes >= max_bytes {
                return (out, Some(key.clone()));
            }
            let Some(item) = self.map.get(key) else {
                continue;
            };
            if item.live(now_ms) && filter(key) {
                let value = if with_values {
                    item.value.to_vec()
                } else {
                    Vec::new()
                };
                bytes += key.len() + value.len();
                out.push(KeyValue {
                    key: key.to_vec(),
                    value,
                    expire_at_ms: item.expire_at_ms,
                });
            }
        }
        (out, None)
    }

    /// Order-independent SHA-1 digest of every key, value and expiry held: equal on two copies
    /// exactly when they hold the same data (up to SHA-1 collisions). 20 zero bytes when empty.
    pub fn digest(&self) -> [u8; 20] {
        let mut acc = [0u8; 20];
        for (key, item) in &self.map {
            let mut h = Sha1::new();
            h.update((key.len() as u64).to_le_bytes());
            h.update(key);
            h.update((item.value.len() as u64).to_le_bytes());
            h.update(&item.value);
            h.update(item.expire_at_ms.to_le_bytes());
            xor_digest(&mut acc, &h.finalize().into());
        }
        acc
    }

    /// Every held item (expired ones not yet deleted included), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &Item)> {
        self.map.iter()
    }

    /// The held item at `key`, expired or not.
    pub fn held(&self, key: &[u8]) -> Option<&Item> {
        self.map.get(key)
    }

    /// Calls `f` on held items in key order from `start` on, until it returns false.
    pub fn for_each_from(&self, start: &[u8], mut f: impl FnMut(&Bytes, &Item) -> bool) {
        self.order.borrow_mut().settle(&self.map);
        let order = self.order.borrow();
        for key in order
            .settled
            .range::<[u8], _>((Bound::Included(start), Bound::Unbounded))
        {
            if let Some(item) = self.map.get(&key.0)
                && !f(&key.0, item)
            {
                return;
            }
        }
    }
}

/// Folds `digest` into `acc`. XOR makes the result independent of order, so digests of
/// keys, partitions or nodes combine into the digest of their union.
pub fn xor_digest(acc: &mut [u8; 20], digest: &[u8; 20]) {
    for (a, b) in acc.iter_mut().zip(digest) {
        *a ^= b;
    }
}

/// Hex form of a digest: 40 lowercase characters.
pub fn digest_hex(digest: &[u8; 20]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses a value as Redis does for INCR: base 10, optional minus, no spaces, no plus sign,
/// no leading zeros.
fn parse_i64(value: &[u8]) -> Result<i64, IncrError> {
    let text = std::str::from_utf8(value).map_err(|_| IncrError::NotAnInteger)?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && text != "-0";
    if !canonical {
        return Err(IncrError::NotAnInteger);
    }
    text.parse().map_err(|_| IncrError::NotAnInteger)
}

/// Builds the log entry for `command` at `position`.
pub fn entry(position: Position, timestamp_ms: i64, command: &Command) -> LogEntry {
    let bytes = command.encode_to_vec();
    LogEntry {
        epoch: position.epoch,
        offset: position.offset,
        timestamp_ms,
        crc32c: crc32c::crc32c(&bytes),
        command: bytes,
    }
}

/// The epoch marker a new primary writes first in its epoch.
pub fn epoch_marker(primary: &str) -> Command {
    Command {
        cmd: Some(Cmd::EpochMarker(proto::EpochMarker {
            primary: primary.to_string(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn apply(state: &mut KvState, command: Command) {
        let at = Position::new(1, state.last().offset + 1);
        state.apply(&entry(at, NOW, &command)).expect("applies");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        #[test]
        fn scans_see_every_held_key_in_order(
            ops in proptest::collection::vec((0u16..3000, proptest::prelude::any::<bool>()), 1..12_000),
            mid in 0usize..12_000,
        ) {
            let mut s = KvState::new(0);
            let mut model = std::collections::BTreeSet::new();
            for (i, (k, put_it)) in ops.into_iter().enumerate() {
                if i == mid {
                    // The first ordered read builds the index; the writes after it keep it.
                    let (page, _) = s.scan(b"", b"", usize::MAX / 20, NOW, |_| true);
                    let got: Vec<Bytes> = page.into_iter().map(|kv| Bytes::from(kv.key)).collect();
                    let want: Vec<Bytes> = model.iter().cloned().collect();
                    proptest::prop_assert!(got == want, "the index built mid-way differs");
                }
                let key = Bytes::from(format!("k{k:05}"));
                let command = if put_it {
                    model.insert(key.clone());
                    Some(put(key, Bytes::from("v"), 0))
                } else {
                    model.remove(&key);
                    s.decide_delete(&key, NOW).1
                };
                if let Some(c) = command {
                    apply(&mut s, c);
                }
            }
            let (page, next) = s.scan(b"", b"", usize::MAX / 20, NOW, |_| true);
            proptest::prop_assert!(next.is_none());
            let got: Vec<Bytes> = page.into_iter().map(|kv| Bytes::from(kv.key)).collect();
            let want: Vec<Bytes> = model.into_iter().collect();
            proptest::prop_assert_eq!(got.len(), want.len());
            proptest::prop_assert!(got == want, "scan order or content differs from the model");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_index_orders_keys_exactly_as_bytes_do(
            a in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            shared in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20),
        ) {
            let a = [shared.clone(), a].concat();
            let b = [shared, b].concat();
            proptest::prop_assert_eq!(compare_keys(&a, &b), a.as_slice().cmp(b.as_slice()));
        }
    }

    #[test]
    fn a_reversed_or_empty_range_is_an_empty_page_and_budgets_bound_a_page() {
        let mut s = KvState::new(0);
        for i in 0..50 {
            apply(
                &mut s,
                put(
                    Bytes::from(format!("k{i:02}")),
                    Bytes::from(vec![b'v'; 100]),
                    0,
                ),
            );
        }
        assert_eq!(
            s.scan(b"k40", b"k10", 10, NOW, |_| true),
            (Vec::new(), None)
        );
        assert_eq!(
            s.scan(b"k20", b"k20", 10, NOW, |_| true),
            (Vec::new(), None)
        );
        let (page, next) = s.scan_page(b"", b"", 50, 350, true, NOW, |_| true);
        // 103-byte entries: 309 bytes is under the budget, so a fourth is taken (412), then stop.
        assert_eq!(page.len(), 4, "the page stops once it holds 350 bytes");
        assert_eq!(next, Some(Bytes::from("k04")));
        let (keys, _) = s.scan_page(b"", b"", 5, usize::MAX, false, NOW, |_| true);
        assert!(
            keys.iter().all(|kv| kv.value.is_empty()),
            "keys only copies no value"
        );
    }

    #[test]
    fn entries_apply_only_at_exactly_the_next_offset() {
        let mut s = KvState::new(0);
        let c = put(Bytes::from("a"), Bytes::from("1"), 0);
        assert!(matches!(
            s.apply(&entry(Position::new(1, 2), NOW, &c)),
            Err(Error::OffsetGap {
                expected: 1,
                got: 2,
                ..
            })
        ));
        s.apply(&entry(Position::new(1, 1), NOW, &c)).expect("next");
        assert!(
            s.apply(&entry(Position::new(1, 1), NOW, &c)).is_err(),
            "replay"
        );
        assert_eq!(s.last(), Position::new(1, 1));
    }

    #[test]
    fn a_damaged_command_is_refused_and_changes_nothing() {
        let mut s = KvState::new(0);
        let mut e = entry(
            Position::new(1, 1),
            NOW,
            &put(Bytes::from("a"), Bytes::from("1"), 0),
        );
        e.command[3] ^= 1;
        assert!(matches!(s.apply(&e), Err(Error::CorruptEntry { .. })));
        assert!(s.is_empty());
        assert_eq!(s.last(), Position::default());
    }

    #[test]
    fn the_epoch_history_records_where_each_epoch_starts() {
        let mut s = KvState::new(0);
        for (epoch, offset) in [(1, 1), (1, 2), (3, 3), (3, 4), (4, 5)] {
            s.apply(&entry(
                Position::new(epoch, offset),
                NOW,
                &epoch_marker("n"),
            ))
            .expect("apply");
        }
        assert_eq!(s.epoch_history(), &[(1, 1), (3, 3), (4, 5)]);
        assert!(
            s.apply(&entry(Position::new(2, 6), NOW, &epoch_marker("n")))
                .is_err(),
            "an older epoch after a newer one is corruption"
        );
    }

    #[test]
    fn set_conditions_and_expiry_follow_redis() {
        let mut s = KvState::new(0);
        let k = Bytes::from("k");
        let nx = s.decide_set(
            k.clone(),
            Bytes::from("v1"),
            SetCondition::IfPresent,
            SetExpiry::Clear,
            true,
            NOW,
        );
        assert!(!nx.applied && nx.command.is_none(), "XX on a missing key");
        let set = s.decide_set(
            k.clone(),
            Bytes::from("v1"),
            SetCondition::IfAbsent,
            SetExpiry::At(NOW + 1000),
            true,
            NOW,
        );
        apply(&mut s, set.command.expect("a put"));
        assert_eq!(s.ttl(&k, NOW), Ttl::Millis(1000));
        let keep = s.decide_set(
            k.clone(),
            Bytes::from("v2"),
            SetCondition::Always,
            SetExpiry::Keep,
            true,
            NOW,
        );
        assert_eq!(keep.previous, Some(Bytes::from("v1")));
        apply(&mut s, keep.command.expect("a put"));
        assert_eq!(s.ttl(&k, NOW), Ttl::Millis(1000), "KEEPTTL kept it");
        let plain = s.decide_set(
            k.clone(),
            Bytes::from("v3"),
            SetCondition::Always,
            SetExpiry::Clear,
            true,
            NOW,
        );
        apply(&mut s, plain.command.expect("a put"));
        assert_eq!(s.ttl(&k, NOW), Ttl::Persistent, "plain SET clears the TTL");
        assert_eq!(s.expiring(), 0);
    }

    #[test]
    fn expired_keys_are_invisible_and_reaped_through_commands() {
        let mut s = KvState::new(0);
        for (i, at) in [(1, NOW - 5), (2, NOW + 5), (3, NOW - 1)] {
            apply(
                &mut s,
                put(Bytes::from(format!("k{i}")), Bytes::from("v"), at),
            );
        }
        assert!(s.get(b"k1", NOW).is_none(), "expired reads as missing");
        assert_eq!(s.len(), 3, "but is held until its delete is logged");
        let due = s.due_expirations(NOW, 10);
        assert_eq!(
            due,
            vec![Bytes::from("k1"), Bytes::from("k3")],
            "soonest first"
        );
        apply(&mut s, KvState::delete_all(&due).expect("a batch"));
        assert_eq!(s.len(), 1);
        assert!(s.due_expirations(NOW, 10).is_empty());
    }

    #[test]
    fn incr_parses_like_redis() {
        let mut s = KvState::new(0);
        let (v, c) = s
            .decide_incr(Bytes::from("n"), 5, NOW)
            .expect("from nothing");
        assert_eq!(v, 5);
        apply(&mut s, c);
        assert_eq!(
            s.decide_incr(Bytes::from("n"), -7, NOW).map(|r| r.0),
            Ok(-2)
        );
        for bad in [
            "",
            " 1",
            "+1",
            "01",
            "1.0",
            "abc",
            "-0",
            "99999999999999999999",
        ] {
            assert_eq!(
                parse_i64(bad.as_bytes()),
                Err(IncrError::NotAnInteger),
                "{bad:?}"
            );
        }
        apply(
            &mut s,
            put(Bytes::from("m"), Bytes::from(i64::MAX.to_string()), 0),
        );
        assert_eq!(
            s.decide_incr(Bytes::from("m"), 1, NOW).map(|r| r.0),
            Err(IncrError::Overflow)
        );
    }

    #[test]
    fn the_digest_ignores_order_and_sees_every_field() {
        let mut a = KvState::new(0);
        let mut b = KvState::new(0);
        assert_eq!(digest_hex(&a.digest()), "0".repeat(40));
        apply(&mut a, put(Bytes::from("x"), Bytes::from("1"), 0));
        apply(&mut a, put(Bytes::from("y"), Bytes::from("2"), 0));
        apply(&mut b, put(Bytes::from("y"), Bytes::from("2"), 0));
        apply(&mut b, put(Bytes::from("x"), Bytes::from("1"), 0));
        assert_eq!(a.digest(), b.digest());
        apply(&mut b, put(Bytes::from("x"), Bytes::from("1"), NOW + 1));
        assert_ne!(a.digest(), b.digest(), "expiry counts");
    }

    #[test]
    fn a_batch_sees_its_own_writes_and_logs_one_command() {
        use proto::{BatchOp, DeleteRequest, GetRequest, PutRequest, batch_op::Op};
        let mut s = KvState::new(0);
        apply(&mut s, put(Bytes::from("a"), Bytes::from("old"), 0));
        let op = |o| BatchOp { op: Some(o) };
        let ops = vec![
            op(Op::Put(PutRequest {
                key: b"a".to_vec(),
                value: b"new".to_vec(),
                ..Default::default()
            })),
            op(Op::Get(GetRequest {
                key: b"a".to_vec(),
                read: None,
            })),
            op(Op::Put(PutRequest {
                key: b"b".to_vec(),
                value: b"1".to_vec(),
                condition: proto::PutCondition::IfPresent as i32,
                ..Default::default()
            })),
            op(Op::Delete(DeleteRequest {
                key: b"a".to_vec(),
                write: None,
            })),
            op(Op::Get(GetRequest {
                key: b"a".to_vec(),
                read: None,
            })),
        ];
        let (results, command) = s
            .decide_batch(&ops, usize::MAX, NOW)
            .expect("within budget");
        let found: Vec<Option<bool>> = results
            .iter()
            .map(|r| match &r.result {
                Some(proto::batch_result::Result::Get(g)) => Some(g.found),
                _ => None,
            })
            .collect();
        assert_eq!(found, vec![None, Some(true), None, None, Some(false)]);
        let Some(Cmd::Batch(batch)) = command.clone().and_then(|c| c.cmd) else {
            panic!("one batch command, got {command:?}")
        };
        assert_eq!(
            batch.commands.len(),
            2,
            "the put of a, then its delete; b was skipped"
        );
        apply(&mut s, command.expect("command"));
        assert!(
            s.is_empty(),
            "after the batch, a is gone and b never existed"
        );
    }

    #[test]
    fn a_snapshot_restores_the_same_state() {
        let mut s = KvState::new(2);
        for i in 0..20 {
            apply(
                &mut s,
                put(Bytes::from(format!("k{i}")), Bytes::from("v"), NOW + i),
            );
        }
        let restored = KvState::from_snapshot(2, s.snapshot());
        assert_eq!(restored.digest(), s.digest());
        assert_eq!(restored.last(), s.last());
        assert_eq!(restored.expiring(), 20);
        assert_eq!(restored.bytes(), s.bytes());
    }
}
