//! The RESP2 wire codec: turns the bytes a Redis client sends into commands, and replies into
//! bytes.
//!
//! Partita nodes speak the Redis protocol so that `redis-cli`, `redis-benchmark` and the Redis
//! client libraries work unchanged. This module is the pure, I/O-free part of that: the server
//! reads socket bytes into a [`BytesMut`], calls [`RequestParser::parse`] until it returns
//! `Ok(None)`, executes each command, and encodes the replies with the `write_*` helpers (or
//! [`encode`] for a built [`Reply`]).
//!
//! # Requests
//!
//! The parser accepts the two request forms Redis accepts, chosen by a request's first byte as
//! Redis does (`processInputBuffer` in Redis's `networking.c`):
//!
//! - **multibulk** (`*<n>\r\n` then `n` times `$<len>\r\n<len bytes>\r\n`), what every client
//!   library, `redis-cli` and `redis-benchmark` send. `*0` and negative counts are empty commands
//!   that Redis silently skips, and so does the parser. Arguments are zero-copy slices of the read
//!   buffer ([`BytesMut::split_to`] then [`BytesMut::freeze`]). Keep in mind that such a slice
//!   keeps the whole buffer allocation it came from alive: copy an argument
//!   ([`Bytes::copy_from_slice`]) before storing it for long.
//! - **inline** (any other first byte): one line, ended by `\n` with or without `\r`, split into
//!   arguments by the rules of Redis's `sdssplitargs` (blanks separate arguments; double quotes
//!   with `\n \r \t \b \a \\ \" \xHH` escapes; single quotes with `\'`). Empty and blank lines are
//!   skipped. This is what someone typing into `telnet` or `nc` sends.
//!
//! The parser follows Redis byte for byte, including two leniencies: the two bytes after a
//! multibulk header's `\r` and after a bulk payload are skipped without checking that they are
//! `\r\n` (Redis does not check them either), and an inline line's arguments end at its first
//! NUL byte, as `sdssplitargs` reads it. (Redis itself, searching for the `\n` with `strchr`,
//! would not see the end of such a line at all and would stall until the inline limit.)
//!
//! # Limits
//!
//! [`ParserLimits`] bounds what a client can make the server hold before a command is complete:
//! the argument count, each bulk argument's length, and the length of any line (inline command or
//! `*`/`$` header). They default to Redis's own (`proto-max-bulk-len` 512 MiB,
//! `PROTO_INLINE_MAX_SIZE` 64 KiB, 1024 × 1024 arguments). A declared count or length over its
//! limit is an error as soon as its header line is complete, before any payload arrives; a line
//! is an error as soon as more than the limit has arrived without its terminator. Errors do not
//! depend on how the byte stream was split into reads.
//!
//! # Errors
//!
//! A [`ProtocolError`]'s text is exactly Redis's (for example `Protocol error: invalid bulk
//! length`), so clients and tests written against Redis see the same thing. Redis replies with
//! `-ERR <text>` ([`ProtocolError::write_reply`]) and closes the connection; after an error the
//! parser and the buffer are in an unspecified state and should be dropped with the connection.
//!
//! # Replies
//!
//! [`Reply`] is a RESP2 reply tree for the rare replies that are built before being sent. The hot
//! path (GET and SET under `redis-benchmark` pipelining) should use the `write_*` helpers instead,
//! which append straight to the output buffer and allocate nothing beyond growing it. Simple
//! strings and errors cannot carry `\r` or `\n` on the wire; the encoder replaces each with a
//! space, as Redis does for error messages.

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

/// Bounds on what one request may declare or send before it is complete.
///
/// The defaults are Redis's; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParserLimits {
    /// The largest argument count a multibulk request may declare (`*<n>`).
    pub max_multibulk_len: usize,
    /// The largest length a bulk argument may declare (`$<len>`), Redis's `proto-max-bulk-len`.
    pub max_bulk_len: usize,
    /// The longest line, terminator excluded: an inline command, or a `*`/`$` header line.
    /// Redis's `PROTO_INLINE_MAX_SIZE`.
    pub max_inline_len: usize,
}

impl Default for ParserLimits {
    fn default() -> Self {
        Self {
            max_multibulk_len: 1024 * 1024,
            max_bulk_len: 512 * 1024 * 1024,
            max_inline_len: 64 * 1024,
        }
    }
}

/// A malformed request. The display text is Redis's reply text, word for word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProtocolError {
    /// A `*` header whose count is not an integer, or is larger than
    /// [`ParserLimits::max_multibulk_len`].
    #[error("Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// A `$` header whose length is not an integer, is negative, or is larger than
    /// [`ParserLimits::max_bulk_len`].
    #[error("Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// A multibulk request whose next argument does not start with `$`.
    #[error("Protocol error: expected '$', got '{}'", char::from(*.got))]
    ExpectedBulk {
        /// The byte that came instead of `$`.
        got: u8,
    },
    /// An inline command longer than [`ParserLimits::max_inline_len`].
    #[error("Protocol error: too big inline request")]
    TooBigInline,
    /// A `*` header line longer than [`ParserLimits::max_inline_len`].
    #[error("Protocol error: too big mbulk count string")]
    TooBigMultibulkCount,
    /// A `$` header line longer than [`ParserLimits::max_inline_len`].
    #[error("Protocol error: too big bulk count string")]
    TooBigBulkCount,
    /// An inline command with an unterminated quote, or a closing quote followed by something
    /// other than a blank.
    #[error("Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
}

impl ProtocolError {
    /// Appends the reply Redis sends for this error, `-ERR <text>\r\n`. Redis then closes the
    /// connection.
    pub fn write_reply(&self, out: &mut BytesMut) {
        write_error(out, format!("ERR {self}"));
    }
}

/// The multibulk request being read, once its `*<n>` header has been consumed.
#[derive(Debug)]
struct Multibulk {
    /// Arguments still to come.
    remaining: usize,
    /// Arguments received so far.
    args: Vec<Bytes>,
    /// Bytes held in `args`.
    args_len: usize,
    /// The length from the current argument's `$<len>` header, once that has been consumed.
    bulk_len: Option<usize>,
}

/// An incremental parser of client requests (see the module documentation).
///
/// One per connection: it carries progress through a request across reads, so the same buffer
/// must be passed to every call, with new bytes only appended to its end.
#[derive(Debug, Default)]
pub struct RequestParser {
    limits: ParserLimits,
    /// The multibulk request in progress, if any.
    pending: Option<Multibulk>,
    /// How many bytes at the front of the buffer are known not to hold the terminator of the line
    /// being read, so that a line arriving a few bytes at a time is scanned once, not once per
    /// read.
    scanned: usize,
}

impl RequestParser {
    /// A parser enforcing `limits`.
    pub fn new(limits: ParserLimits) -> Self {
        Self {
            limits,
            pending: None,
            scanned: 0,
        }
    }

    /// The limits this parser enforces.
    pub fn limits(&self) -> ParserLimits {
        self.limits
    }

    /// Whether part of a multibulk request has been consumed from the buffer without the request
    /// being complete: if the client disconnects now, it disconnected mid-request.
    /// (Bytes of a partial request still in the buffer are not counted; check the buffer too.)
    pub fn in_progress(&self) -> bool {
        self.pending.is_some()
    }

    /// The bytes of complete arguments of the request in progress that have already been moved
    /// out of the buffer. Together with the buffer's length this is the memory the connection's
    /// unfinished request holds, for a server that caps it (as Redis's
    /// `client-query-buffer-limit` does).
    pub fn pending_arg_bytes(&self) -> usize {
        self.pending.as_ref().map_or(0, |m| m.args_len)
    }

    /// Parses the next command from the front of `buf`.
    ///
    /// Returns `Ok(Some(args))` with the command's arguments (never empty: empty commands are
    /// skipped) once the whole command has arrived; by then every byte of it, and nothing after
    /// it, has been removed from `buf`. Pipelined commands come out one per call, in order.
    ///
    /// Returns `Ok(None)` when more bytes are needed. The parser may already have moved complete
    /// header lines and arguments of a multibulk request out of `buf` into its own state, so a
    /// large argument arriving over many reads is not re-parsed each time; call again with the
    /// same buffer once more bytes have been appended.
    ///
    /// Returns an error, with Redis's text, for a malformed request or one over the limits; the
    /// connection should then be answered with [`ProtocolError::write_reply`] and closed.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        loop {
            if self.pending.is_some() {
                return self.continue_multibulk(buf);
            }
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            if first == b'*' {
                if !self.start_multibulk(buf)? {
                    return Ok(None);
                }
                // Either a request is now in progress, or it was empty and skipped.
            } else {
                match self.parse_inline(buf)? {
                    None => return Ok(None),
                    Some(args) if args.is_empty() => {}
                    Some(args) => return Ok(Some(args)),
                }
            }
        }
    }

    /// Consumes a `*<n>` header. Returns `Ok(false)` if the line is not complete yet.
    fn start_multibulk(&mut self, buf: &mut BytesMut) -> Result<bool, ProtocolError> {
        let Some(cr) = self.find_line_end(buf, b'\r', ProtocolError::TooBigMultibulkCount)? else {
            return Ok(false);
        };
        // Redis wants one more byte, the `\n`, which it skips without looking at.
        if buf.len() - cr < 2 {
            return Ok(false);
        }
        let count = buf
            .get(1..cr)
            .and_then(string_to_i64)
            .ok_or(ProtocolError::InvalidMultibulkLength)?;
        let count = match usize::try_from(count) {
            // Zero and negative counts are empty commands.
            Err(_) | Ok(0) => 0,
            Ok(n) if n <= self.limits.max_multibulk_len => n,
            Ok(_) => return Err(ProtocolError::InvalidMultibulkLength),
        };
        buf.advance(cr + 2);
        self.scanned = 0;
        if count > 0 {
            self.pending = Some(Multibulk {
                remaining: count,
                // The count is the client's word only; grow past this as arguments arrive.
                args: Vec::with_capacity(count.min(1024)),
                args_len: 0,
                bulk_len: None,
            });
        }
        Ok(true)
    }

    /// Reads arguments of the multibulk request in progress until it is complete or the buffer
    /// runs dry.
    fn continue_multibulk(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let limits = self.limits;
        loop {
            let Some(request) = self.pending.as_mut() else {
                return Ok(None);
            };
            let len = match request.bulk_len {
                Some(len) => len,
                None => {
                    let Some(cr) = find_line_end(
                        buf,
                        b'\r',
                        &mut self.scanned,
                        limits.max_inline_len,
                        ProtocolError::TooBigBulkCount,
                    )?
                    else {
                        return Ok(None);
                    };
                    if buf.len() - cr < 2 {
                        return Ok(None);
                    }
                    if let Some(&got) = buf.first().filter(|&&b| b != b'$') {
                        return Err(ProtocolError::ExpectedBulk { got });
                    }
                    let len = buf
                        .get(1..cr)
                        .and_then(string_to_i64)
                        .and_then(|len| usize::try_from(len).ok())
                        .filter(|&len| len <= limits.max_bulk_len)
                        .ok_or(ProtocolError::InvalidBulkLength)?;
                    buf.advance(cr + 2);
                    self.scanned = 0;
                    request.bulk_len = Some(len);
                    len
                }
            };
            // The payload and the two bytes after it (`\r\n`, unchecked, as in Redis).
            if buf.len() < len.saturating_add(2) {
                return Ok(None);
            }
            let arg = buf.split_to(len).freeze();
            buf.advance(2);
            request.args.push(arg);
            request.args_len += len;
            request.bulk_len = None;
            request.remaining -= 1;
            if request.remaining == 0 {
                let args = std::mem::take(&mut request.args);
                self.pending = None;
                return Ok(Some(args));
            }
        }
    }

    /// Consumes one inline line. Returns its arguments (possibly none), or `Ok(None)` if the line
    /// is not complete yet.
    fn parse_inline(&mut self, buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let Some(newline) = self.find_line_end(buf, b'\n', ProtocolError::TooBigInline)? else {
            return Ok(None);
        };
        let line = buf.get(..newline).unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let args = split_args(line).ok_or(ProtocolError::UnbalancedQuotes)?;
        buf.advance(newline + 1);
        self.scanned = 0;
        Ok(Some(args))
    }

    fn find_line_end(
        &mut self,
        buf: &[u8],
        terminator: u8,
        too_big: ProtocolError,
    ) -> Result<Option<usize>, ProtocolError> {
        find_line_end(
            buf,
            terminator,
            &mut self.scanned,
            self.limits.max_inline_len,
            too_big,
        )
    }
}

/// Finds the terminator of the line at the front of `buf`, returning its index.
///
/// Redis errors once more than `limit` bytes are buffered with no terminator among them; with
/// bytes arriving one at a time that is exactly "the terminator is at an index above `limit`",
/// which is the rule applied here whatever the reads were, so that errors do not depend on how
/// the stream was split. `scanned` remembers how far the search got, so each byte of a line is
/// looked at once however many reads it arrives in.
fn find_line_end(
    buf: &[u8],
    terminator: u8,
    scanned: &mut usize,
    limit: usize,
    too_big: ProtocolError,
) -> Result<Option<usize>, ProtocolError> {
    let window_end = buf.len().min(limit.saturating_add(1));
    let start = (*scanned).min(window_end);
    let window = buf.get(start..window_end).unwrap_or_default();
    if let Some(i) = window.iter().position(|&b| b == terminator) {
        *scanned = start + i;
        return Ok(Some(start + i));
    }
    if buf.len() > limit {
        return Err(too_big);
    }
    *scanned = window_end;
    Ok(None)
}

/// Parses a decimal integer exactly as Redis's `string2ll` does: an optional `-`, then digits with
/// no leading zero (`0` itself excepted, `-0` refused), nothing else, fitting an `i64`.
fn string_to_i64(s: &[u8]) -> Option<i64> {
    // Redis refuses strings of LONG_STR_SIZE (21) bytes or more outright.
    if s.is_empty() || s.len() >= 21 {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    if !matches!(digits.first(), Some(b'1'..=b'9')) {
        return None;
    }
    let mut value: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        0i64.checked_sub_unsigned(value)
    } else {
        i64::try_from(value).ok()
    }
}

/// C's `isspace` in the C locale.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits an inline line into arguments exactly as Redis's `sdssplitargs` does, or `None` for
/// unbalanced quotes. The line ends at its first NUL byte, as the C code sees it.
fn split_args(line: &[u8]) -> Option<Vec<Bytes>> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => line.get(..nul).unwrap_or_default(),
        None => line,
    };
    // The C code reads the terminating NUL; 0 stands for "end of line" here.
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut args = Vec::new();
    let mut i = 0;
    loop {
        while i < line.len() && is_c_space(at(i)) {
            i += 1;
        }
        if i >= line.len() {
            return Some(args);
        }
        let mut arg = Vec::new();
        let (mut in_double, mut in_single, mut done) = (false, false, false);
        while !done {
            let c = at(i);
            if in_double {
                let hex = (c == b'\\' && at(i + 1) == b'x')
                    .then(|| Some(hex_value(at(i + 2))? * 16 + hex_value(at(i + 3))?))
                    .flatten();
                if let Some(byte) = hex {
                    arg.push(byte);
                    i += 3;
                } else if c == b'\\' && at(i + 1) != 0 {
                    i += 1;
                    arg.push(match at(i) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    // A closing quote must be followed by a blank or the end of the line.
                    if at(i + 1) != 0 && !is_c_space(at(i + 1)) {
                        return None;
                    }
                    done = true;
                } else if c == 0 {
                    return None;
                } else {
                    arg.push(c);
                }
            } else if in_single {
                if c == b'\\' && at(i + 1) == b'\'' {
                    i += 1;
                    arg.push(b'\'');
                } else if c == b'\'' {
                    if at(i + 1) != 0 && !is_c_space(at(i + 1)) {
                        return None;
                    }
                    done = true;
                } else if c == 0 {
                    return None;
                } else {
                    arg.push(c);
                }
            } else {
                // Unquoted text ends only at these (not at \v or \f, which are skipped as blanks
                // between arguments): Redis's quirk, kept.
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    _ => arg.push(c),
                }
            }
            if at(i) != 0 {
                i += 1;
            }
        }
        args.push(Bytes::from(arg));
    }
}

/// A RESP2 reply, for replies built before being encoded. See [`encode`]; the `write_*` helpers
/// encode the same forms without building one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A simple string, `+OK\r\n`. `\r` and `\n` are sent as spaces.
    Simple(Bytes),
    /// An error, `-ERR message\r\n`. By convention it starts with an upper-case error code
    /// (`ERR`, `WRONGTYPE`, `MOVED`...). `\r` and `\n` are sent as spaces.
    Error(Bytes),
    /// An integer, `:42\r\n`.
    Integer(i64),
    /// A bulk string, `$5\r\nhello\r\n`; any bytes.
    Bulk(Bytes),
    /// The null bulk string, `$-1\r\n` (for example GET of a missing key).
    Null,
    /// The null array, `*-1\r\n` (for example a timed-out BLPOP, an aborted EXEC).
    NullArray,
    /// An array of replies, `*<n>\r\n` followed by each.
    Array(Vec<Reply>),
}

impl Reply {
    /// `+OK`.
    pub fn ok() -> Self {
        Reply::Simple(Bytes::from_static(b"OK"))
    }

    /// An error reply with the given text, which should start with its error code.
    pub fn error(message: impl Into<Bytes>) -> Self {
        Reply::Error(message.into())
    }
}

impl From<ProtocolError> for Reply {
    fn from(error: ProtocolError) -> Self {
        Reply::Error(Bytes::from(format!("ERR {error}")))
    }
}

/// Appends the RESP2 encoding of `reply` to `out`.
pub fn encode(reply: &Reply, out: &mut BytesMut) {
    match reply {
        Reply::Simple(s) => write_simple(out, s),
        Reply::Error(e) => write_error(out, e),
        Reply::Integer(n) => write_integer(out, *n),
        Reply::Bulk(b) => write_bulk(out, b),
        Reply::Null => write_null(out),
        Reply::NullArray => write_null_array(out),
        Reply::Array(items) => {
            write_array_header(out, items.len());
            for item in items {
                encode(item, out);
            }
        }
    }
}

/// Appends a simple string reply, `+<s>\r\n`, with any `\r` or `\n` in `s` sent as a space.
pub fn write_simple(out: &mut BytesMut, s: impl AsRef<[u8]>) {
    write_line(out, b'+', s.as_ref());
}

/// Appends an error reply, `-<message>\r\n`, with any `\r` or `\n` sent as a space. The message
/// should start with its error code, for example `ERR unknown command`.
pub fn write_error(out: &mut BytesMut, message: impl AsRef<[u8]>) {
    write_line(out, b'-', message.as_ref());
}

/// Appends an integer reply, `:<n>\r\n`.
pub fn write_integer(out: &mut BytesMut, n: i64) {
    write_number(out, b':', n < 0, n.unsigned_abs());
}

/// Appends a bulk string reply, `$<len>\r\n<data>\r\n`.
pub fn write_bulk(out: &mut BytesMut, data: impl AsRef<[u8]>) {
    let data = data.as_ref();
    out.reserve(data.len() + 24 + 2);
    write_bulk_header(out, data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Appends only the header of a bulk string reply, `$<len>\r\n`. The caller must send exactly
/// `len` bytes then `\r\n` after it; this lets a large value be written from its own buffer
/// instead of being copied into `out`.
pub fn write_bulk_header(out: &mut BytesMut, len: usize) {
    write_number(out, b'$', false, len as u64);
}

/// Appends the null bulk string, `$-1\r\n`.
pub fn write_null(out: &mut BytesMut) {
    out.extend_from_slice(b"$-1\r\n");
}

/// Appends the null array, `*-1\r\n`.
pub fn write_null_array(out: &mut BytesMut) {
    out.extend_from_slice(b"*-1\r\n");
}

/// Appends an array header, `*<len>\r\n`; the caller then appends `len` replies.
pub fn write_array_header(out: &mut BytesMut, len: usize) {
    write_number(out, b'*', false, len as u64);
}

/// Appends `args` encoded as a multibulk request, the form clients send
/// (`*<n>\r\n$<len>\r\n<arg>\r\n...`).
pub fn encode_command<A: AsRef<[u8]>>(args: &[A], out: &mut BytesMut) {
    write_array_header(out, args.len());
    for arg in args {
        write_bulk(out, arg);
    }
}

/// `<prefix><text>\r\n`, with `\r` and `\n` in `text` replaced by spaces.
fn write_line(out: &mut BytesMut, prefix: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.extend_from_slice(&[prefix]);
    if text.iter().any(|&b| b == b'\r' || b == b'\n') {
        out.extend(
            text.iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    } else {
        out.extend_from_slice(text);
    }
    out.extend_from_slice(b"\r\n");
}

/// `<prefix>[-]<magnitude>\r\n`, formatted on the stack.
fn write_number(out: &mut BytesMut, prefix: u8, negative: bool, magnitude: u64) {
    // Prefix, sign, up to 20 digits, CRLF.
    let mut buf = [0u8; 24];
    let mut start = buf.len() - 2;
    buf[start..].copy_from_slice(b"\r\n");
    let mut rest = magnitude;
    loop {
        start -= 1;
        buf[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if negative {
        start -= 1;
        buf[start] = b'-';
    }
    start -= 1;
    buf[start] = prefix;
    out.extend_from_slice(&buf[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits(
        max_multibulk_len: usize,
        max_bulk_len: usize,
        max_inline_len: usize,
    ) -> ParserLimits {
        ParserLimits {
            max_multibulk_len,
            max_bulk_len,
            max_inline_len,
        }
    }

    /// Everything a parse of `input` yields: the commands, then the error if one stops it.
    #[derive(Debug, PartialEq, Eq)]
    struct Outcome {
        commands: Vec<Vec<Vec<u8>>>,
        error: Option<ProtocolError>,
        /// Unconsumed bytes left in the buffer at the end (with no error).
        leftover: usize,
    }

    fn drain(parser: &mut RequestParser, buf: &mut BytesMut, out: &mut Outcome) -> bool {
        loop {
            match parser.parse(buf) {
                Ok(Some(args)) => {
                    assert!(!args.is_empty());
                    out.commands.push(args.iter().map(|a| a.to_vec()).collect());
                }
                Ok(None) => return true,
                Err(e) => {
                    out.error = Some(e);
                    return false;
                }
            }
        }
    }

    /// Feeds `input` in chunks ending at each of `cuts` (sorted), parsing after each chunk.
    fn parse_split(limits: ParserLimits, input: &[u8], cuts: &[usize]) -> Outcome {
        let mut parser = RequestParser::new(limits);
        let mut buf = BytesMut::new();
        let mut out = Outcome {
            commands: Vec::new(),
            error: None,
            leftover: 0,
        };
        let mut from = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            let cut = cut.clamp(from, input.len());
            buf.extend_from_slice(&input[from..cut]);
            from = cut;
            if !drain(&mut parser, &mut buf, &mut out) {
                return out;
            }
        }
        out.leftover = buf.len();
        out
    }

    fn parse_all(input: &[u8]) -> Outcome {
        parse_split(ParserLimits::default(), input, &[])
    }

    fn parse_bytewise(limits: ParserLimits, input: &[u8]) -> Outcome {
        let cuts: Vec<usize> = (0..input.len()).collect();
        parse_split(limits, input, &cuts)
    }

    fn cmd(args: &[&[u8]]) -> Vec<Vec<u8>> {
        args.iter().map(|a| a.to_vec()).collect()
    }

    #[test]
    fn default_limits_are_redis_defaults() {
        let l = ParserLimits::default();
        assert_eq!(l.max_multibulk_len, 1_048_576);
        assert_eq!(l.max_bulk_len, 536_870_912);
        assert_eq!(l.max_inline_len, 65_536);
    }

    /// An input and the commands it must parse into.
    type Case = (&'static [u8], &'static [&'static [&'static [u8]]]);

    #[test]
    fn request_forms() {
        let cases: &[Case] = &[
            // Multibulk.
            (b"*1\r\n$4\r\nPING\r\n", &[&[b"PING"]]),
            (
                b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n",
                &[&[b"SET", b"key", b"value"]],
            ),
            (b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n", &[&[b"GET", b""]]),
            (b"*1\r\n$3\r\na\r\n\r\n", &[&[b"a\r\n"]]),
            (b"*1\r\n$4\r\n\x00\xff\r\n\r\n", &[&[b"\x00\xff\r\n"]]),
            // Empty multibulk requests are skipped.
            (b"*0\r\n", &[]),
            (b"*-1\r\n", &[]),
            (b"*-7\r\n*0\r\n*1\r\n$1\r\nx\r\n", &[&[b"x"]]),
            // Redis skips the two bytes after a header's \r and after a payload unchecked.
            (b"*1\rX$3\r\nfooYZ", &[&[b"foo"]]),
            // Inline.
            (b"PING\r\n", &[&[b"PING"]]),
            (b"PING\n", &[&[b"PING"]]),
            (b"set a b\r\n", &[&[b"set", b"a", b"b"]]),
            (b"  set \t a \x0b\x0c b  \r\n", &[&[b"set", b"a", b"b"]]),
            (b"\r\n\n   \r\nPING\r\n", &[&[b"PING"]]),
            (
                b"set k \"a b\" 'c d'\r\n",
                &[&[b"set", b"k", b"a b", b"c d"]],
            ),
            (b"set k \"\"\r\n", &[&[b"set", b"k", b""]]),
            (b"set k ''\n", &[&[b"set", b"k", b""]]),
            (
                b"\"\\n\\r\\t\\b\\a\\\\\\\"\\q\\x41\\x4a\\xff\"\r\n",
                &[&[b"\n\r\t\x08\x07\\\"qAJ\xff"]],
            ),
            // \x without two hex digits is an ordinary escape of 'x'.
            (b"\"\\xZZ\" \"\\x4\"\n", &[&[b"xZZ", b"x4"]]),
            (
                b"'it\\'s' 'a\\\\b' 'x\\n'\n",
                &[&[b"it's", b"a\\\\b", b"x\\n"]],
            ),
            // Quotes can open in the middle of an argument.
            (b"a\"b c\"\n", &[&[b"ab c"]]),
            // A closing quote followed by a blank (\r counts as one).
            (b"\"a\"\tb\r\n", &[&[b"a", b"b"]]),
            // \v and \f separate arguments only when they start one (sdssplitargs's quirk).
            (b"a\x0bb\x0c \x0cc\n", &[&[b"a\x0bb\x0c", b"c"]]),
            // Only one \r is dropped before the \n.
            (b"a\r\r\n", &[&[b"a"]]),
            // The line ends at a NUL byte, as in C.
            (b"get foo\x00bar\r\n", &[&[b"get", b"foo"]]),
            // A line starting with NUL or blanks then NUL is blank.
            (b"\x00abc\r\nPING\r\n", &[&[b"PING"]]),
            // Mixed forms in one buffer.
            (
                b"PING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nQUIT\n",
                &[&[b"PING"], &[b"ECHO", b"hi"], &[b"QUIT"]],
            ),
        ];
        for (input, expected) in cases {
            let expected: Vec<Vec<Vec<u8>>> = expected.iter().map(|c| cmd(c)).collect();
            let whole = parse_all(input);
            assert_eq!(
                whole.error,
                None,
                "input {:?}",
                input.escape_ascii().to_string()
            );
            assert_eq!(
                whole.commands,
                expected,
                "input {:?}",
                input.escape_ascii().to_string()
            );
            assert_eq!(whole.leftover, 0);
            assert_eq!(
                parse_bytewise(ParserLimits::default(), input),
                whole,
                "input {:?} byte by byte",
                input.escape_ascii().to_string()
            );
        }
    }

    #[test]
    fn protocol_errors_have_redis_text() {
        let small = limits(4, 16, 32);
        let long_line = |prefix: &[u8], n: usize| {
            let mut v = prefix.to_vec();
            v.extend(std::iter::repeat_n(b'1', n));
            v
        };
        let cases: Vec<(ParserLimits, Vec<u8>, &str)> = vec![
            (
                small,
                b"*x\r\n".to_vec(),
                "Protocol error: invalid multibulk length",
            ),
            (
                small,
                b"*\r\n".to_vec(),
                "Protocol error: invalid multibulk length",
            ),
            (
                small,
                b"*01\r\n".to_vec(),
                "Protocol error: invalid multibulk length",
            ),
            (
                small,
                b"*-0\r\n".to_vec(),
                "Protocol error: invalid multibulk length",
            ),
            (
                small,
                b"*+1\r\n".to_vec(),
                "Protocol error: invalid multibulk length",
            ),
            (
                small,
                b"*1 \r\n".to_vec(),
                "Protocol error: invalid multibulk length",
            ),
            (
                small,
                b"*5\r\n".to_vec(),
                "Protocol error: invalid multibulk length",
            ),
            (
                ParserLimits::default(),
                b"*1048577\r\n".to_vec(),
                "Protocol error: invalid multibulk length",
            ),
            (
                ParserLimits::default(),
                b"*99999999999999999999\r\n".to_vec(),
                "Protocol error: invalid multibulk length",
            ),
            (
                small,
                b"*1\r\n$-1\r\n".to_vec(),
                "Protocol error: invalid bulk length",
            ),
            (
                small,
                b"*1\r\n$\r\n".to_vec(),
                "Protocol error: invalid bulk length",
            ),
            (
                small,
                b"*1\r\n$x\r\n".to_vec(),
                "Protocol error: invalid bulk length",
            ),
            (
                small,
                b"*1\r\n$03\r\n".to_vec(),
                "Protocol error: invalid bulk length",
            ),
            (
                small,
                b"*1\r\n$17\r\n".to_vec(),
                "Protocol error: invalid bulk length",
            ),
            (
                ParserLimits::default(),
                b"*1\r\n$536870913\r\n".to_vec(),
                "Protocol error: invalid bulk length",
            ),
            (
                small,
                b"*1\r\nfoo\r\n".to_vec(),
                "Protocol error: expected '$', got 'f'",
            ),
            (
                small,
                b"*2\r\n$1\r\na\r\n:1\r\n".to_vec(),
                "Protocol error: expected '$', got ':'",
            ),
            (
                small,
                b"*1\r\n\r\n".to_vec(),
                "Protocol error: expected '$', got '\r'",
            ),
            (
                small,
                long_line(b"", 33),
                "Protocol error: too big inline request",
            ),
            (
                small,
                long_line(b"*", 32),
                "Protocol error: too big mbulk count string",
            ),
            (
                small,
                long_line(b"*1\r\n$", 32),
                "Protocol error: too big bulk count string",
            ),
            (
                small,
                b"\"abc\r\n".to_vec(),
                "Protocol error: unbalanced quotes in request",
            ),
            (
                small,
                b"'abc\r\n".to_vec(),
                "Protocol error: unbalanced quotes in request",
            ),
            (
                small,
                b"\"a\"b\r\n".to_vec(),
                "Protocol error: unbalanced quotes in request",
            ),
            (
                small,
                b"'a'b\r\n".to_vec(),
                "Protocol error: unbalanced quotes in request",
            ),
            (
                small,
                b"\"abc\\\"\r\n".to_vec(),
                "Protocol error: unbalanced quotes in request",
            ),
            (
                small,
                b"\"ab\x00c\"\r\n".to_vec(),
                "Protocol error: unbalanced quotes in request",
            ),
        ];
        for (limits, input, message) in cases {
            let shown = input.escape_ascii().to_string();
            let whole = parse_split(limits, &input, &[]);
            let error = whole
                .error
                .unwrap_or_else(|| panic!("no error for {shown}"));
            assert_eq!(error.to_string(), message, "input {shown}");
            assert_eq!(
                parse_bytewise(limits, &input),
                whole,
                "input {shown} byte by byte"
            );
        }
    }

    #[test]
    fn lines_up_to_the_limit_are_accepted() {
        let l = limits(4, 16, 8);
        // 8 bytes before the \n, the \r included: accepted.
        let out = parse_bytewise(l, b"abcdefg\r\n");
        assert_eq!(out.commands, vec![cmd(&[b"abcdefg"])]);
        let out = parse_bytewise(l, b"*0000004\r\n");
        assert_eq!(out.error, Some(ProtocolError::InvalidMultibulkLength));
        // One more is too big, found as soon as the ninth byte arrives without a terminator.
        let out = parse_split(l, b"abcdefgh", &[]);
        assert_eq!(out.error, None);
        let out = parse_split(l, b"abcdefghi", &[]);
        assert_eq!(out.error, Some(ProtocolError::TooBigInline));
        // The terminator arriving in the same read does not help.
        let out = parse_split(l, b"abcdefgh\r\n", &[]);
        assert_eq!(out.error, Some(ProtocolError::TooBigInline));
        let out = parse_split(l, b"*00000001\r\n", &[]);
        assert_eq!(out.error, Some(ProtocolError::TooBigMultibulkCount));
        // Exactly the limits themselves.
        let mut input = b"*4\r\n$16\r\n".to_vec();
        input.extend_from_slice(&[b'v'; 16]);
        input.extend_from_slice(b"\r\n$0\r\n\r\n$0\r\n\r\n$0\r\n\r\n");
        let out = parse_bytewise(l, &input);
        assert_eq!(out.error, None);
        assert_eq!(out.commands.len(), 1);
        assert_eq!(out.commands[0][0], vec![b'v'; 16]);
    }

    #[test]
    fn limits_are_enforced_before_the_payload_arrives() {
        let l = limits(1024, 1024, 64 * 1024);
        let mut parser = RequestParser::new(l);
        let mut buf = BytesMut::from(&b"*1\r\n$1000000000\r\n"[..]);
        assert_eq!(
            parser.parse(&mut buf),
            Err(ProtocolError::InvalidBulkLength)
        );

        let mut parser = RequestParser::new(l);
        let mut buf = BytesMut::from(&b"*1000000\r\n"[..]);
        assert_eq!(
            parser.parse(&mut buf),
            Err(ProtocolError::InvalidMultibulkLength)
        );

        // Default limits: a 512 MiB argument is allowed, and not waited for before the header
        // is accepted.
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nSET\r\n$536870912\r\nabc"[..]);
        assert_eq!(parser.parse(&mut buf), Ok(None));
        assert!(parser.in_progress());
        assert_eq!(parser.pending_arg_bytes(), 3);
        assert_eq!(&buf[..], b"abc");

        // A line with no terminator is refused as soon as it is over the limit.
        let mut parser = RequestParser::new(limits(4, 4, 16));
        let mut buf = BytesMut::new();
        for i in 0..16 {
            buf.extend_from_slice(b"x");
            assert_eq!(parser.parse(&mut buf), Ok(None), "after {i} bytes");
        }
        buf.extend_from_slice(b"x");
        assert_eq!(parser.parse(&mut buf), Err(ProtocolError::TooBigInline));
    }

    #[test]
    fn partial_bulk_is_kept_not_reparsed() {
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$5\r\nhe"[..]);
        assert_eq!(parser.parse(&mut buf), Ok(None));
        // Complete headers and arguments have moved into the parser; the partial payload waits.
        assert_eq!(&buf[..], b"he");
        buf.extend_from_slice(b"llo\r");
        assert_eq!(parser.parse(&mut buf), Ok(None));
        buf.extend_from_slice(b"\n*1\r\n$4\r\nPI");
        let args = parser.parse(&mut buf).unwrap().unwrap();
        assert_eq!(
            args,
            vec![Bytes::from_static(b"GET"), Bytes::from_static(b"hello")]
        );
        assert!(!parser.in_progress());
        // Nothing of the next command has been consumed.
        assert_eq!(&buf[..], b"*1\r\n$4\r\nPI");
    }

    #[test]
    fn pipelined_commands_come_out_in_order() {
        let mut input = BytesMut::new();
        let mut expected = Vec::new();
        for i in 0..100 {
            let key = format!("key:{i}");
            let value = format!("value-{i}");
            if i % 3 == 0 {
                input.extend_from_slice(format!("GET {key}\r\n").as_bytes());
                expected.push(cmd(&[b"GET", key.as_bytes()]));
            } else {
                encode_command(
                    &[b"SET".as_slice(), key.as_bytes(), value.as_bytes()],
                    &mut input,
                );
                expected.push(cmd(&[b"SET", key.as_bytes(), value.as_bytes()]));
            }
        }
        let whole = parse_all(&input);
        assert_eq!(whole.commands, expected);
        assert_eq!(whole.error, None);
        assert_eq!(parse_bytewise(ParserLimits::default(), &input), whole);
    }

    #[test]
    fn one_command_per_call_leaves_the_rest() {
        let mut parser = RequestParser::default();
        let mut buf = BytesMut::from(&b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nPING\r\nPING\r\n"[..]);
        let first = parser.parse(&mut buf).unwrap();
        assert_eq!(first, Some(vec![Bytes::from_static(b"PING")]));
        assert_eq!(&buf[..], b"*1\r\n$4\r\nPING\r\nPING\r\n");
        parser.parse(&mut buf).unwrap();
        assert_eq!(&buf[..], b"PING\r\n");
        parser.parse(&mut buf).unwrap();
        assert!(buf.is_empty());
        assert_eq!(parser.parse(&mut buf), Ok(None));
    }

    #[test]
    fn bulk_arguments_are_zero_copy() {
        let mut buf = BytesMut::with_capacity(64);
        encode_command(&[b"SET".as_slice(), b"key", b"a-value"], &mut buf);
        let range = buf.as_ptr_range();
        let args = RequestParser::default().parse(&mut buf).unwrap().unwrap();
        for arg in &args {
            assert!(range.contains(&arg.as_ptr()), "{arg:?} was copied");
        }
    }

    #[test]
    fn error_reply() {
        let mut out = BytesMut::new();
        ProtocolError::InvalidBulkLength.write_reply(&mut out);
        assert_eq!(&out[..], b"-ERR Protocol error: invalid bulk length\r\n");
        out.clear();
        ProtocolError::ExpectedBulk { got: b'\n' }.write_reply(&mut out);
        assert_eq!(&out[..], b"-ERR Protocol error: expected '$', got ' '\r\n");
        assert_eq!(
            Reply::from(ProtocolError::UnbalancedQuotes),
            Reply::Error(Bytes::from_static(
                b"ERR Protocol error: unbalanced quotes in request"
            ))
        );
    }

    #[test]
    fn string_to_i64_matches_string2ll() {
        for (s, v) in [
            ("0", Some(0)),
            ("1", Some(1)),
            ("-1", Some(-1)),
            ("1234567890", Some(1_234_567_890)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-9223372036854775809", None),
            ("", None),
            ("-", None),
            ("-0", None),
            ("00", None),
            ("01", None),
            ("+1", None),
            (" 1", None),
            ("1 ", None),
            ("1x", None),
            ("000000000000000000001", None),
        ] {
            assert_eq!(string_to_i64(s.as_bytes()), v, "{s:?}");
        }
    }

    #[test]
    fn encoder_output() {
        let cases: Vec<(Reply, &[u8])> = vec![
            (Reply::ok(), b"+OK\r\n"),
            (Reply::Simple(Bytes::from_static(b"a\r\nb")), b"+a  b\r\n"),
            (Reply::Simple(Bytes::new()), b"+\r\n"),
            (Reply::error("ERR bad\nthing"), b"-ERR bad thing\r\n"),
            (Reply::Integer(0), b":0\r\n"),
            (Reply::Integer(7), b":7\r\n"),
            (Reply::Integer(-42), b":-42\r\n"),
            (Reply::Integer(i64::MAX), b":9223372036854775807\r\n"),
            (Reply::Integer(i64::MIN), b":-9223372036854775808\r\n"),
            (
                Reply::Bulk(Bytes::from_static(b"hello")),
                b"$5\r\nhello\r\n",
            ),
            (
                Reply::Bulk(Bytes::from_static(b"a\r\n\x00")),
                b"$4\r\na\r\n\x00\r\n",
            ),
            (Reply::Bulk(Bytes::new()), b"$0\r\n\r\n"),
            (Reply::Null, b"$-1\r\n"),
            (Reply::NullArray, b"*-1\r\n"),
            (Reply::Array(vec![]), b"*0\r\n"),
            (
                Reply::Array(vec![
                    Reply::Integer(1),
                    Reply::Null,
                    Reply::Array(vec![Reply::Bulk(Bytes::from_static(b"x"))]),
                    Reply::error("WRONGTYPE no"),
                ]),
                b"*4\r\n:1\r\n$-1\r\n*1\r\n$1\r\nx\r\n-WRONGTYPE no\r\n",
            ),
        ];
        for (reply, expected) in cases {
            let mut out = BytesMut::new();
            encode(&reply, &mut out);
            assert_eq!(&out[..], expected, "{reply:?}");
        }
    }

    #[test]
    fn write_helpers() {
        let mut out = BytesMut::new();
        write_simple(&mut out, "OK");
        write_error(&mut out, b"ERR x".as_slice());
        write_integer(&mut out, -1);
        write_bulk(&mut out, b"v");
        write_bulk_header(&mut out, 12_345_678_901);
        write_null(&mut out);
        write_null_array(&mut out);
        write_array_header(&mut out, 3);
        write_array_header(&mut out, usize::MAX);
        let mut expected =
            b"+OK\r\n-ERR x\r\n:-1\r\n$1\r\nv\r\n$12345678901\r\n$-1\r\n*-1\r\n*3\r\n".to_vec();
        expected.extend_from_slice(format!("*{}\r\n", usize::MAX).as_bytes());
        assert_eq!(&out[..], &expected[..]);
    }

    #[test]
    fn encode_command_output() {
        let mut out = BytesMut::new();
        encode_command(&[b"SET".as_slice(), b"k", b""], &mut out);
        assert_eq!(&out[..], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    fn sorted_cuts(len: usize, raw: Vec<usize>) -> Vec<usize> {
        let mut cuts: Vec<usize> = raw.into_iter().map(|c| c % (len + 1)).collect();
        cuts.sort_unstable();
        cuts
    }

    proptest! {
        #[test]
        fn multibulk_round_trips_under_any_split(
            commands in prop::collection::vec(
                prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..6),
                0..8,
            ),
            raw_cuts in prop::collection::vec(any::<usize>(), 0..20),
        ) {
            let mut input = BytesMut::new();
            for command in &commands {
                encode_command(command, &mut input);
            }
            let cuts = sorted_cuts(input.len(), raw_cuts);
            let out = parse_split(ParserLimits::default(), &input, &cuts);
            prop_assert_eq!(out.error, None);
            prop_assert_eq!(out.leftover, 0);
            prop_assert_eq!(&out.commands, &commands);
            prop_assert_eq!(parse_bytewise(ParserLimits::default(), &input), out);
        }

        #[test]
        fn inline_round_trips_quoted_arguments(
            args in prop::collection::vec(prop::collection::vec(1u8..=255, 0..20), 1..6),
        ) {
            // Quote every argument with \xHH escapes only; sdssplitargs must undo that exactly.
            let mut line = Vec::new();
            for arg in &args {
                line.extend_from_slice(b" \"");
                for b in arg {
                    line.extend_from_slice(format!("\\x{b:02x}").as_bytes());
                }
                line.push(b'"');
            }
            line.extend_from_slice(b"\r\n");
            let out = parse_bytewise(ParserLimits::default(), &line);
            prop_assert_eq!(out.error, None);
            prop_assert_eq!(out.commands, vec![args]);
        }

        #[test]
        fn any_input_parses_the_same_under_any_split(
            input in prop::collection::vec(
                prop::sample::select(b"*$\r\n0123-x \"'\\ab".to_vec()),
                0..80,
            ),
            raw_cuts in prop::collection::vec(any::<usize>(), 0..20),
        ) {
            let l = limits(3, 5, 6);
            let cuts = sorted_cuts(input.len(), raw_cuts);
            let whole = parse_split(l, &input, &[]);
            prop_assert_eq!(parse_split(l, &input, &cuts), whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            input in prop::collection::vec(any::<u8>(), 0..200),
        ) {
            let l = limits(3, 5, 6);
            let whole = parse_split(l, &input, &[]);
            prop_assert_eq!(parse_bytewise(l, &input), whole);
        }
    }
}
