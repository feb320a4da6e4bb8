//! An upstream's HTTP/1.1 answer, read from bytes as they arrive ([`AnswerReader`]): interim
//! answers skipped (RFC 9110 §15.2), the final head (RFC 9112 §4–5), the body framed by RFC 9112
//! §6.3 (a chunked body decoded, §7.1), and whether the connection may carry another request.
//! Pure: bytes in, structure out; no I/O, no clock (the client owns the socket and the deadline).
//!
//! The rules, each a unit test below:
//! - a 1xx other than 101 is interim: parsed and skipped; every head of one answer counts
//!   against [`Limits::head`] together;
//! - a 101 is an error: the gateway never asks for an upgrade (RFC 9110 §15.2.2);
//! - 204, 304 and answers to HEAD have no body, whatever their fields say (RFC 9112 §6.3 1.);
//!   the connection is never reused after them: bytes a non-conforming server sends later (a body)
//!   could not be told from the next answer;
//! - `Transfer-Encoding` must be exactly one `chunked` coding, all its field lines together (the
//!   gateway cannot relay other codings: `gzip, chunked` is refused too), and only in HTTP/1.1
//!   (RFC 9112 §6.1);
//! - `Transfer-Encoding` with `Content-Length`: chunked, and the connection is closed after the
//!   answer (RFC 9112 §6.3 3.);
//! - `Content-Length` values must agree: identical duplicates, also as a list (`5, 5`), are one
//!   length; anything else is an error (RFC 9110 §8.6, RFC 9112 §6.3 5.);
//! - chunk-size lines, chunk extensions and trailers are bounded: at most 16 digits a size, and
//!   [`Limits::chunk_metadata`] bytes of extensions and trailer section per answer;
//! - without a length or chunked coding the body ends with the connection (RFC 9112 §6.3 8.),
//!   which is never reused;
//! - a body holds at most [`Limits::body`] bytes;
//! - a connection may be reused only when the answer allows it (version, `Connection`, framing)
//!   and ended exactly where its framing said: no byte beyond it.

use std::ops::Range;

use bytes::Bytes;

/// The most fields a head may have.
const MAX_FIELDS: usize = 96;
/// The most hex digits of a chunk size (leading zeros included): 16 hold any `u64`.
const MAX_CHUNK_SIZE_DIGITS: u8 = 16;

/// How much of an answer is read at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of every head of one answer (interim ones included), blank lines included.
    pub head: usize,
    /// Bytes of the body, as relayed (a chunked body decoded).
    pub body: usize,
    /// Bytes of chunk extensions (from the end of a chunk size to its line's CR) and of the trailer
    /// section, together, per answer.
    pub chunk_metadata: usize,
}

impl Limits {
    /// Token endpoints answer with a few hundred bytes: these leave room for far more.
    pub const DEFAULT: Limits = Limits {
        head: 64 * 1024,
        body: 4 * 1024 * 1024,
        chunk_metadata: 8 * 1024,
    };
}

/// Why an answer could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("the upstream closed the connection before answering")]
    NoAnswer,
    #[error("the upstream closed the connection before its answer was complete")]
    Truncated,
    #[error("the upstream's answer is not HTTP/1.x")]
    Malformed,
    #[error("the upstream's answer head is too large")]
    HeadTooLarge,
    #[error("the upstream's answer body is too large")]
    BodyTooLarge,
    #[error("the upstream answered with 101 Switching Protocols")]
    Upgrade,
    #[error("the upstream's answer has a Transfer-Encoding the gateway cannot relay")]
    BadTransferEncoding,
    #[error("the upstream's answer has an invalid Content-Length")]
    BadLength,
    #[error("the upstream's answer has an invalid chunked body")]
    BadChunk,
    #[error("the upstream's answer has too many chunk extensions or trailers")]
    ChunkMetadataTooLarge,
}

impl ResponseError {
    /// A short, fixed text for the access log (never any byte of the answer).
    pub fn cause(self) -> &'static str {
        match self {
            ResponseError::NoAnswer => "closed before the answer",
            ResponseError::Truncated => "closed during the answer",
            ResponseError::Malformed => "malformed answer",
            ResponseError::HeadTooLarge => "answer head too large",
            ResponseError::BodyTooLarge => "answer body too large",
            ResponseError::Upgrade => "upgrade answer (101)",
            ResponseError::BadTransferEncoding => "bad transfer-encoding",
            ResponseError::BadLength => "bad content-length",
            ResponseError::BadChunk => "bad chunked body",
            ResponseError::ChunkMetadataTooLarge => "chunk extensions or trailers too large",
        }
    }
}

#[cfg(test)]
impl ResponseError {
    /// Every error, for tests.
    pub(crate) const ALL: [ResponseError; 10] = [
        ResponseError::NoAnswer,
        ResponseError::Truncated,
        ResponseError::Malformed,
        ResponseError::HeadTooLarge,
        ResponseError::BodyTooLarge,
        ResponseError::Upgrade,
        ResponseError::BadTransferEncoding,
        ResponseError::BadLength,
        ResponseError::BadChunk,
        ResponseError::ChunkMetadataTooLarge,
    ];
}

/// How the body that follows a final head ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (204, 304, or an answer to HEAD).
    Empty,
    Length(usize),
    Chunked,
    /// Everything until the upstream closes (no length given).
    UntilClose,
}

/// A response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Where the reason phrase is in the parsed bytes.
    pub reason: Range<usize>,
    /// Every field but the hop-by-hop ones (those listed, and those the `Connection` field names:
    /// RFC 9110 §7.6.1) and those that frame the body (the gateway frames the answer it sends
    /// on), in order: where its name (as sent) and its value are in the parsed bytes, so that
    /// relaying them copies nothing ([`Head::fields`] reads them).
    pub fields: Vec<(Range<usize>, Range<usize>)>,
    pub framing: Framing,
    /// Whether the answer lets the connection stay open: its version and `Connection` field
    /// (RFC 9112 §9.3), and no `Transfer-Encoding` beside a `Content-Length` (§6.3 3.).
    pub keep_alive: bool,
    /// Bytes of the head, blank line included.
    pub len: usize,
}

impl Head {
    /// The kept fields, read from `buf` (the bytes the head was parsed from).
    pub fn fields<'a>(&'a self, buf: &'a [u8]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        self.fields
            .iter()
            .map(|(n, v)| (&buf[n.clone()], &buf[v.clone()]))
    }
}

/// An upstream's answer, whole.
#[derive(Debug)]
pub struct Answer {
    pub head: Head,
    /// The bytes `head` was parsed from (its fields are ranges of them).
    pub raw_head: Bytes,
    /// The body as relayed (a chunked body decoded).
    pub body: Bytes,
    /// Bytes the answer took on the connection, interim answers included.
    pub wire_len: usize,
    /// Whether the connection may carry another request: the answer allows it, has a length or
    /// chunked framing, and nothing came after its end.
    pub reusable: bool,
}

/// What [`AnswerReader::feed`] made of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// All of the input belongs to the answer, which is not complete yet.
    NeedMore,
    /// The answer is complete ([`AnswerReader::answer`]): its last bytes were the first `used` of
    /// this input; the rest came after it (and makes the connection unfit for reuse).
    Done { used: usize },
}

/// Reads one answer from the bytes of a connection, fed in any split.
#[derive(Debug)]
pub struct AnswerReader {
    to_head: bool,
    limits: Limits,
    state: State,
    /// The head being read; once the final head is complete, it and the body after it (as
    /// relayed): one buffer, so that the answer is two slices of it.
    buf: Vec<u8>,
    /// The final head, once read.
    head: Option<Head>,
    /// Bytes of heads read so far (interim ones included).
    heads: usize,
    /// Bytes of the input that belong to the answer so far.
    wire: usize,
    /// Bytes came after the answer's end, or the connection ended.
    beyond: bool,
    /// The first error: every later call returns it.
    failed: Option<ResponseError>,
}

#[derive(Debug)]
enum State {
    Head,
    Length { left: usize },
    Chunked(Chunked),
    UntilClose,
    Done,
}

impl AnswerReader {
    /// A reader with [`Limits::DEFAULT`]; `to_head`: the request was a HEAD.
    pub fn new(to_head: bool) -> AnswerReader {
        AnswerReader::with_limits(to_head, Limits::DEFAULT)
    }

    pub fn with_limits(to_head: bool, limits: Limits) -> AnswerReader {
        AnswerReader {
            to_head,
            limits,
            state: State::Head,
            buf: Vec::new(),
            head: None,
            heads: 0,
            wire: 0,
            beyond: false,
            failed: None,
        }
    }

    /// Takes the next bytes of the connection.
    pub fn feed(&mut self, input: &[u8]) -> Result<Progress, ResponseError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        let result = self.advance(input);
        if let Err(e) = result {
            self.failed = Some(e);
        }
        result
    }

    /// The connection ended (the upstream closed it): the answer is complete if its body was to
    /// end so (or it had ended before); otherwise why not.
    pub fn end(&mut self) -> Result<Progress, ResponseError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        self.beyond = true;
        let result = match self.state {
            State::Done => Ok(Progress::Done { used: 0 }),
            // RFC 9112 §6.3 8.: the close ends such a body.
            State::UntilClose => {
                self.state = State::Done;
                Ok(Progress::Done { used: 0 })
            }
            State::Head if self.wire == 0 => Err(ResponseError::NoAnswer),
            _ => Err(ResponseError::Truncated),
        };
        if let Err(e) = result {
            self.failed = Some(e);
        }
        result
    }

    /// Whether the answer is complete.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Whether the final head has been read (the body, if any, is being read).
    pub fn has_head(&self) -> bool {
        self.head.is_some()
    }

    /// Bytes of the input that belong to the answer so far.
    pub fn wire_len(&self) -> usize {
        self.wire
    }

    /// The complete answer (`None` before [`Progress::Done`]).
    pub fn answer(self) -> Option<Answer> {
        if !self.is_done() {
            return None;
        }
        let head = self.head?;
        let reusable = head.keep_alive
            && matches!(head.framing, Framing::Length(_) | Framing::Chunked)
            && !self.beyond;
        let all = Bytes::from(self.buf);
        Some(Answer {
            raw_head: all.slice(..head.len),
            body: all.slice(head.len..),
            head,
            wire_len: self.wire,
            reusable,
        })
    }

    fn advance(&mut self, input: &[u8]) -> Result<Progress, ResponseError> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            if let State::Done = self.state {
                self.beyond |= !rest.is_empty();
                return Ok(Progress::Done { used: at });
            }
            if rest.is_empty() {
                return Ok(Progress::NeedMore);
            }
            let body_left = self.limits.body.saturating_sub(self.body_len());
            let used = match &mut self.state {
                State::Done => 0,
                State::Head => self.head_bytes(rest)?,
                State::Length { left } => {
                    let n = (*left).min(rest.len());
                    *left -= n;
                    if *left == 0 {
                        self.state = State::Done;
                    }
                    self.buf.extend_from_slice(&rest[..n]);
                    n
                }
                State::Chunked(c) => {
                    let used = c.decode(rest, &mut self.buf, body_left, self.limits)?;
                    if c.done() {
                        self.state = State::Done;
                    }
                    used
                }
                State::UntilClose => {
                    if rest.len() > body_left {
                        return Err(ResponseError::BodyTooLarge);
                    }
                    self.buf.extend_from_slice(rest);
                    rest.len()
                }
            };
            at += used;
            self.wire += used;
            if used == 0 && !self.is_done() {
                // Every state takes a byte or ends; kept from looping should one not.
                return Ok(Progress::NeedMore);
            }
        }
    }

    fn body_len(&self) -> usize {
        self.head
            .as_ref()
            .map_or(0, |h| self.buf.len().saturating_sub(h.len))
    }

    /// Takes head bytes from the front of `rest` (up to the head's end); parses the head once it
    /// is complete and sets how its body is read.
    fn head_bytes(&mut self, rest: &[u8]) -> Result<usize, ResponseError> {
        let end = head_end(&self.buf, rest);
        let take = end.unwrap_or(rest.len());
        // RFC 9112 §4: an answer starts with its status line. Checked as the bytes come, so that
        // anything else is refused before it is buffered.
        let have = self.buf.len();
        let prefix = &b"HTTP/"[have.min(5)..];
        let n = prefix.len().min(take);
        if rest[..n] != prefix[..n] {
            return Err(ResponseError::Malformed);
        }
        if self.heads + take > self.limits.head {
            return Err(ResponseError::HeadTooLarge);
        }
        if self.buf.capacity() == 0 {
            // The first read usually holds the whole answer: one allocation for head and body.
            self.buf.reserve(rest.len().clamp(512, 64 * 1024));
        }
        self.heads += take;
        self.buf.extend_from_slice(&rest[..take]);
        if end.is_none() {
            return Ok(take);
        }
        let head = parse_head(&self.buf, self.to_head, self.limits)?;
        match head.status {
            // RFC 9110 §15.2.2: never asked for.
            101 => return Err(ResponseError::Upgrade),
            // RFC 9110 §15.2: interim, the final answer follows.
            100..=199 => {
                self.buf.clear();
                return Ok(take);
            }
            _ => {}
        }
        self.state = match head.framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => {
                // What the upstream claims is not all reserved at once.
                self.buf.reserve(n.min(64 * 1024));
                State::Length { left: n }
            }
            Framing::Chunked => State::Chunked(Chunked::default()),
            Framing::UntilClose => State::UntilClose,
        };
        self.head = Some(head);
        Ok(take)
    }
}

/// Where the head that `before` started ends in `rest` (just after its blank line), if it does:
/// at the first LF that ends an empty line (`\n\n` or `\n\r\n`), which is where the parser ends
/// a head (a field value holds no LF), so the head is parsed once, whole.
fn head_end(before: &[u8], rest: &[u8]) -> Option<usize> {
    // The byte `k` places before `rest[i]`, looking back into `before`.
    let back = |i: usize, k: usize| -> Option<u8> {
        match i.checked_sub(k) {
            Some(j) => rest.get(j).copied(),
            None => before
                .len()
                .checked_sub(k - i)
                .and_then(|j| before.get(j).copied()),
        }
    };
    let mut from = 0;
    while let Some(p) = rest.get(from..)?.iter().position(|&b| b == b'\n') {
        let i = from + p;
        let prev = back(i, 1);
        if prev == Some(b'\n') || (prev == Some(b'\r') && back(i, 2) == Some(b'\n')) {
            return Some(i + 1);
        }
        from = i + 1;
    }
    None
}

/// Where `part`, a slice of `buf`, is in it.
fn span(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = (part.as_ptr() as usize).saturating_sub(buf.as_ptr() as usize);
    start..start + part.len()
}

/// Fields that concern one connection only (RFC 9110 §7.6.1) or the framing of the body.
fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// The elements of a comma-separated field value (RFC 9110 §5.6.1), without their optional
/// whitespace; empty ones are skipped.
fn elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|e| e.trim_ascii())
        .filter(|e| !e.is_empty())
}

/// A `Content-Length` value: one length, or a list of the same length (RFC 9110 §8.6). `None`
/// when invalid.
fn content_length(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for e in value.split(|&b| b == b',').map(|e| e.trim_ascii()) {
        // 1*DIGIT; 19 digits always fit a u64.
        if e.is_empty() || e.len() > 19 || !e.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = e.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    length
}

/// Parses a complete head (`buf` ends with its blank line). `to_head`: the request was a HEAD.
fn parse_head(buf: &[u8], to_head: bool, limits: Limits) -> Result<Head, ResponseError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut r = httparse::Response::new(&mut fields);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n == buf.len() => n,
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::HeadTooLarge),
        _ => return Err(ResponseError::Malformed),
    };
    let status = r.code.ok_or(ResponseError::Malformed)?;
    // RFC 9110 §15: status codes are 100 to 599.
    if !(100..=599).contains(&status) {
        return Err(ResponseError::Malformed);
    }
    let http11 = r.version == Some(1);
    let mut length: Option<Result<u64, ()>> = None;
    let (mut te_lines, mut codings, mut chunked_only) = (0usize, 0usize, true);
    let mut close = false;
    let mut keep_alive_listed = false;
    let mut named: Vec<&[u8]> = Vec::new();
    let mut out = Vec::with_capacity(r.headers.len());
    for f in r.headers.iter() {
        let name = f.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = content_length(f.value).ok_or(());
            length = match (length, n) {
                (None, n) => Some(n),
                (Some(Ok(l)), Ok(n)) if l == n => Some(Ok(l)),
                _ => Some(Err(())),
            };
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            te_lines += 1;
            let before = codings;
            for coding in elements(f.value) {
                codings += 1;
                chunked_only &= coding.eq_ignore_ascii_case(b"chunked");
            }
            // A line without a coding is no valid Transfer-Encoding either.
            chunked_only &= codings > before;
        } else if name.eq_ignore_ascii_case("connection") {
            for option in elements(f.value) {
                if option.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if option.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_listed = true;
                } else {
                    named.push(option);
                }
            }
        }
        if !hop_by_hop(name) {
            out.push((span(buf, name.as_bytes()), span(buf, f.value)));
        }
    }
    if !named.is_empty() {
        // RFC 9110 §7.6.1: fields the Connection field names are for this hop only.
        out.retain(|(n, _)| {
            let n = &buf[n.clone()];
            !named.iter().any(|o| o.eq_ignore_ascii_case(n))
        });
    }
    // RFC 9112 §9.3: HTTP/1.1 persists unless closed; HTTP/1.0 only when asked to.
    let mut keep_alive = !close && (http11 || keep_alive_listed);
    let interim = (100..200).contains(&status);
    let framing = if interim || to_head || status == 204 || status == 304 {
        // RFC 9112 §6.3 1.: no body, whatever the fields say.
        Framing::Empty
    } else if te_lines > 0 {
        // RFC 9112 §6.1: in HTTP/1.0 a Transfer-Encoding is faulty framing; only `chunked`
        // can be decoded and relayed.
        if !http11 || !chunked_only || codings != 1 {
            return Err(ResponseError::BadTransferEncoding);
        }
        // RFC 9112 §6.3 3.: chunked overrides the length, and the connection closes after.
        if length.is_some() {
            keep_alive = false;
        }
        Framing::Chunked
    } else {
        match length {
            Some(Ok(n)) => match usize::try_from(n) {
                Ok(n) if n <= limits.body => Framing::Length(n),
                _ => return Err(ResponseError::BodyTooLarge),
            },
            Some(Err(())) => return Err(ResponseError::BadLength),
            None => {
                // RFC 9112 §6.3 8.: the body ends with the connection.
                keep_alive = false;
                Framing::UntilClose
            }
        }
    };
    Ok(Head {
        status,
        reason: r.reason.map_or(0..0, |p| span(buf, p.as_bytes())),
        fields: out,
        keep_alive,
        framing,
        len,
    })
}

/// Decodes a chunked body (RFC 9112 §7.1) as it arrives, bounded.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
    /// Bytes of chunk extensions and trailer section so far.
    metadata: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// A chunk-size line: `digits` hex digits so far, of value `size`.
    #[default]
    Start,
    Size {
        size: u64,
        digits: u8,
    },
    /// After the size: whitespace, then an extension (`;` …) or the line's CR.
    Ext {
        size: u64,
        started: bool,
    },
    /// The size line's CR was read.
    SizeLf {
        size: u64,
    },
    /// Inside a chunk: this many data bytes left.
    Data(u64),
    /// After a chunk's data: its CR, then its LF.
    DataCr,
    DataLf,
    /// After the last chunk: at the start of a trailer line or of the blank line.
    TrailerStart,
    TrailerLine {
        colon: bool,
    },
    TrailerLf,
    /// The blank line's CR was read.
    EndLf,
    Done,
}

impl Chunked {
    /// Decodes what it can from the front of `input`, appending the data to `out`, and returns
    /// how many bytes it used: all of them, unless the body ended before. `body_left`: how many
    /// more data bytes the body may have.
    fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        mut body_left: usize,
        limits: Limits,
    ) -> Result<usize, ResponseError> {
        let mut at = 0;
        while at < input.len() && !self.done() {
            if let ChunkState::Data(left) = self.state {
                // `left` was checked against the body limit: it fits a usize.
                let n = usize::try_from(left)
                    .unwrap_or(usize::MAX)
                    .min(input.len() - at);
                out.extend_from_slice(&input[at..at + n]);
                at += n;
                body_left = body_left.saturating_sub(n);
                self.state = match left - n as u64 {
                    0 => ChunkState::DataCr,
                    left => ChunkState::Data(left),
                };
                continue;
            }
            self.state = self.step(input[at], body_left, limits)?;
            at += 1;
        }
        Ok(at)
    }

    /// The state after one more byte (outside chunk data).
    fn step(
        &mut self,
        b: u8,
        body_left: usize,
        limits: Limits,
    ) -> Result<ChunkState, ResponseError> {
        use ChunkState::*;
        let bad = ResponseError::BadChunk;
        // A chunk size is checked as it grows: no chunk exceeds the body limit.
        let digit = |size: u64, d: u8| {
            let size = size << 4 | u64::from(d);
            if size > body_left as u64 {
                return Err(ResponseError::BodyTooLarge);
            }
            Ok(size)
        };
        Ok(match self.state {
            Start => Size {
                size: digit(0, hex(b).ok_or(bad)?)?,
                digits: 1,
            },
            Size { size, digits } => match hex(b) {
                Some(_) if digits >= MAX_CHUNK_SIZE_DIGITS => return Err(bad),
                Some(d) => Size {
                    size: digit(size, d)?,
                    digits: digits + 1,
                },
                None => self.extension(size, false, b, limits)?,
            },
            Ext { size, started } => self.extension(size, started, b, limits)?,
            SizeLf { size } => match (b, size) {
                (b'\n', 0) => TrailerStart,
                (b'\n', size) => Data(size),
                _ => return Err(bad),
            },
            DataCr if b == b'\r' => DataLf,
            DataLf if b == b'\n' => Start,
            // RFC 9112 §7.1.2: trailer fields until a blank line; dropped (never relayed).
            TrailerStart if b == b'\r' => EndLf,
            TrailerStart => {
                self.count_metadata(limits)?;
                match b {
                    // No empty name, no obs-fold, no bare LF.
                    b':' | b' ' | b'\t' | b'\n' => return Err(bad),
                    _ if visible(b) => TrailerLine { colon: false },
                    _ => return Err(bad),
                }
            }
            TrailerLine { colon } => {
                self.count_metadata(limits)?;
                match b {
                    b'\r' if colon => TrailerLf,
                    b':' => TrailerLine { colon: true },
                    b' ' | b'\t' => TrailerLine { colon },
                    _ if visible(b) => TrailerLine { colon },
                    _ => return Err(bad),
                }
            }
            TrailerLf if b == b'\n' => {
                self.count_metadata(limits)?;
                TrailerStart
            }
            EndLf if b == b'\n' => Done,
            Data(_) | DataCr | DataLf | TrailerLf | EndLf | Done => return Err(bad),
        })
    }

    /// A byte of a chunk-size line after its digits. RFC 9112 §7.1.1:
    /// `chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )`; extensions
    /// are dropped, the line's CR is not counted.
    fn extension(
        &mut self,
        size: u64,
        started: bool,
        b: u8,
        limits: Limits,
    ) -> Result<ChunkState, ResponseError> {
        if b == b'\r' {
            return Ok(ChunkState::SizeLf { size });
        }
        self.count_metadata(limits)?;
        let started = match b {
            b';' => true,
            b' ' | b'\t' => started,
            _ if started && visible(b) => true,
            _ => return Err(ResponseError::BadChunk),
        };
        Ok(ChunkState::Ext { size, started })
    }

    fn count_metadata(&mut self, limits: Limits) -> Result<(), ResponseError> {
        self.metadata += 1;
        if self.metadata > limits.chunk_metadata {
            return Err(ResponseError::ChunkMetadataTooLarge);
        }
        Ok(())
    }

    fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

/// A hex digit's value.
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A visible character or obs-text (RFC 9110 §5.5): what a field value or an extension holds
/// besides whitespace.
fn visible(b: u8) -> bool {
    matches!(b, 0x21..=0x7e | 0x80..=0xff)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What became of an answer: its status, kept fields, body, bytes used and reuse; or the
    /// error.
    type Outcome = Result<(u16, Vec<(Vec<u8>, Vec<u8>)>, Vec<u8>, usize, bool), ResponseError>;

    /// Feeds `raw` cut at `cuts` (offsets, in any order), then, with `end`, the connection's end.
    fn read_split(raw: &[u8], cuts: &[usize], end: bool, limits: Limits) -> Outcome {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (raw.len() + 1)).collect();
        points.push(raw.len());
        points.sort_unstable();
        let mut r = AnswerReader::with_limits(false, limits);
        let mut at = 0;
        let mut used_total = 0;
        for p in points {
            match r.feed(&raw[at..p])? {
                Progress::Done { used } => used_total += used,
                Progress::NeedMore => used_total += p - at,
            }
            at = p;
        }
        if end && !r.is_done() {
            r.end()?;
        }
        let wire = r.wire_len();
        assert_eq!(wire, used_total, "what feed said it used");
        let Some(a) = r.answer() else {
            return Err(ResponseError::Truncated);
        };
        let fields = a
            .head
            .fields(&a.raw_head)
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        Ok((
            a.head.status,
            fields,
            a.body.to_vec(),
            a.wire_len,
            a.reusable,
        ))
    }

    /// Reads `raw` whole, then the connection's end.
    fn read_to_close(raw: &[u8]) -> Outcome {
        read_split(raw, &[], true, Limits::DEFAULT)
    }

    fn answer(raw: &[u8]) -> Answer {
        let mut r = AnswerReader::new(false);
        assert!(matches!(r.feed(raw), Ok(Progress::Done { .. })), "{raw:?}");
        r.answer().unwrap()
    }

    fn error(raw: &[u8]) -> ResponseError {
        let mut r = AnswerReader::new(false);
        match r.feed(raw) {
            Err(e) => e,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(raw)),
        }
    }

    fn body(raw: &[u8]) -> Vec<u8> {
        answer(raw).body.to_vec()
    }

    #[test]
    fn a_head_tells_status_fields_framing_and_reuse() {
        let raw =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n\
                    Content-Length: 5\r\nConnection: keep-alive\r\n\r\nhello";
        let a = answer(raw);
        let h = &a.head;
        assert_eq!(
            (h.status, &a.raw_head[h.reason.clone()]),
            (200, b"OK".as_slice())
        );
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive && a.reusable);
        assert_eq!((&a.body[..], a.wire_len), (b"hello".as_slice(), raw.len()));
        let fields: Vec<_> = h.fields(&a.raw_head).collect();
        assert_eq!(
            fields,
            [
                (b"Content-Type".as_slice(), b"application/json".as_slice()),
                (b"Cache-Control".as_slice(), b"no-store".as_slice())
            ]
        );
        let mut partial = AnswerReader::new(false);
        assert_eq!(partial.feed(&raw[..20]), Ok(Progress::NeedMore));
        assert!(!partial.has_head());
    }

    #[test]
    fn interim_answers_are_skipped_and_count_against_the_head_limit() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
                    HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        let a = answer(raw);
        assert_eq!((a.head.status, &a.body[..]), (200, b"{}".as_slice()));
        assert_eq!(a.wire_len, raw.len());
        assert_eq!(
            &a.raw_head[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
        );
        // Every head of the answer together, not each alone.
        let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
        let limits = Limits {
            head: 3 * interim.len(),
            ..Limits::DEFAULT
        };
        let many = interim.repeat(4);
        assert_eq!(
            read_split(&many, &[], false, limits),
            Err(ResponseError::HeadTooLarge)
        );
    }

    #[test]
    fn a_101_answer_is_an_error() {
        assert_eq!(
            error(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
            ResponseError::Upgrade
        );
        assert_eq!(
            error(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n\r\n"),
            ResponseError::Upgrade
        );
    }

    #[test]
    fn answers_to_204_304_and_head_have_no_body_whatever_their_fields_say() {
        for raw in [
            &b"HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n"[..],
            b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\nETag: \"x\"\r\n\r\n",
        ] {
            let a = answer(raw);
            assert_eq!((a.head.framing, a.body.len()), (Framing::Empty, 0));
            assert_eq!(a.wire_len, raw.len());
        }
        let mut to_head = AnswerReader::new(true);
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n";
        assert_eq!(to_head.feed(raw), Ok(Progress::Done { used: raw.len() }));
        assert_eq!(to_head.answer().unwrap().head.framing, Framing::Empty);
    }

    /// A body sent later by a server that should not have sent one cannot be told apart from the
    /// next answer: 204s are rare on token endpoints, a new connection costs little.
    #[test]
    fn the_connection_is_never_reused_after_an_answer_without_a_body() {
        assert!(!answer(b"HTTP/1.1 204 No Content\r\n\r\n").reusable);
        assert!(!answer(b"HTTP/1.1 304 Not Modified\r\n\r\n").reusable);
        let mut to_head = AnswerReader::new(true);
        to_head
            .feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
            .unwrap();
        assert!(!to_head.answer().unwrap().reusable);
        // A length of zero is a length: reused.
        assert!(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").reusable);
    }

    #[test]
    fn bytes_after_an_answer_mean_the_connection_is_not_reused() {
        for (raw, used) in [
            (
                &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}GARBAGE"[..],
                40,
            ),
            (b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n", 27),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\nX",
                59,
            ),
        ] {
            let mut r = AnswerReader::new(false);
            assert_eq!(r.feed(raw), Ok(Progress::Done { used }), "{raw:?}");
            assert!(!r.answer().unwrap().reusable);
        }
        // Also when they come in a later read.
        let mut r = AnswerReader::new(false);
        r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            .unwrap();
        assert_eq!(r.feed(b""), Ok(Progress::Done { used: 0 }));
        assert_eq!(r.feed(b"X"), Ok(Progress::Done { used: 0 }));
        assert!(!r.answer().unwrap().reusable);
    }

    #[test]
    fn transfer_encoding_other_than_one_chunked_coding_is_an_error() {
        for te in [
            "gzip, chunked",
            "chunked, chunked",
            "identity",
            "gzip",
            "chunked;q=1",
            "chunkedx",
            "",
            " , ",
        ] {
            let raw = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n0\r\n\r\n");
            assert_eq!(
                error(raw.as_bytes()),
                ResponseError::BadTransferEncoding,
                "{te:?}"
            );
        }
        // All field lines together.
        assert_eq!(
            error(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ResponseError::BadTransferEncoding
        );
        assert_eq!(
            error(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
            ),
            ResponseError::BadTransferEncoding
        );
        // One chunked coding, in any case, with empty list elements around it.
        for te in ["chunked", "Chunked", "CHUNKED", "chunked,", ", chunked"] {
            let raw = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: {te}\r\n\r\n0\r\n\r\n");
            assert_eq!(
                answer(raw.as_bytes()).head.framing,
                Framing::Chunked,
                "{te}"
            );
        }
    }

    #[test]
    fn transfer_encoding_in_http_1_0_is_an_error() {
        assert_eq!(
            error(b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ResponseError::BadTransferEncoding
        );
    }

    #[test]
    fn an_answer_with_both_transfer_encoding_and_content_length_closes_the_connection() {
        for order in [
            "Transfer-Encoding: chunked\r\nContent-Length: 3",
            "Content-Length: 3\r\nTransfer-Encoding: chunked",
        ] {
            let raw = format!("HTTP/1.1 200 OK\r\n{order}\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n");
            let a = answer(raw.as_bytes());
            assert_eq!(a.head.framing, Framing::Chunked);
            assert_eq!(&a.body[..], b"{}");
            assert!(!a.head.keep_alive && !a.reusable);
            assert!(
                a.head.fields(&a.raw_head).next().is_none(),
                "neither relayed"
            );
        }
    }

    #[test]
    fn differing_content_lengths_are_an_error() {
        for cl in [
            "Content-Length: 1\r\nContent-Length: 2",
            "Content-Length: 1, 2",
            "Content-Length: 2\r\nContent-Length: 2, 1",
        ] {
            let raw = format!("HTTP/1.1 200 OK\r\n{cl}\r\n\r\n");
            assert_eq!(error(raw.as_bytes()), ResponseError::BadLength, "{cl}");
        }
    }

    #[test]
    fn identical_content_lengths_are_one_length() {
        for cl in [
            "Content-Length: 5\r\nContent-Length: 5",
            "Content-Length: 5, 5",
            "Content-Length:5 ,\t5",
            "Content-Length: 005",
        ] {
            let raw = format!("HTTP/1.1 200 OK\r\n{cl}\r\n\r\nhello");
            let a = answer(raw.as_bytes());
            assert_eq!(
                (a.head.framing, &a.body[..]),
                (Framing::Length(5), b"hello".as_slice())
            );
            assert!(a.reusable, "{cl}");
        }
    }

    #[test]
    fn a_content_length_that_is_not_a_number_is_an_error() {
        for cl in [
            "x",
            "+5",
            "-1",
            "5 5",
            "0x5",
            "5,",
            ",5",
            "5,,5",
            "99999999999999999999",
        ] {
            let raw = format!("HTTP/1.1 200 OK\r\nContent-Length: {cl}\r\n\r\n");
            assert_eq!(error(raw.as_bytes()), ResponseError::BadLength, "{cl:?}");
        }
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n";
        assert_eq!(error(raw), ResponseError::BadLength);
    }

    #[test]
    fn an_answer_without_length_or_chunked_ends_with_the_connection_and_is_never_reused() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":1}";
        let mut r = AnswerReader::new(false);
        assert_eq!(r.feed(raw), Ok(Progress::NeedMore));
        assert!(r.has_head());
        assert_eq!(r.end(), Ok(Progress::Done { used: 0 }));
        let a = r.answer().unwrap();
        assert_eq!(
            (a.head.framing, &a.body[..], a.reusable),
            (Framing::UntilClose, b"{\"a\":1}".as_slice(), false)
        );
    }

    #[test]
    fn a_body_over_the_limit_is_an_error() {
        let limits = Limits {
            body: 4,
            ..Limits::DEFAULT
        };
        let cases: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\n",
        ];
        for raw in cases {
            assert_eq!(
                read_split(raw, &[], false, limits),
                Err(ResponseError::BodyTooLarge),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        // Exactly the limit is fine.
        let raw =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n2\r\ncd\r\n0\r\n\r\n";
        assert_eq!(read_split(raw, &[], false, limits).unwrap().2, b"abcd");
        let huge = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            Limits::DEFAULT.body + 1
        );
        assert_eq!(error(huge.as_bytes()), ResponseError::BodyTooLarge);
    }

    #[test]
    fn chunks_decode_with_extensions_and_trailers() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                    5;ext=1\r\nhello\r\n6 ; a=\"b c\";d\r\n world\r\n0;last\r\nX-Trailer: 1\r\n\
                    Other:\r\n\r\n";
        let a = answer(raw);
        assert_eq!(&a.body[..], b"hello world");
        assert_eq!(a.wire_len, raw.len());
        assert!(a.reusable);
        assert_eq!(
            body(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\n"),
            b"0123456789"
        );
    }

    #[test]
    fn chunk_extensions_and_trailers_are_bounded_together() {
        let limits = Limits {
            chunk_metadata: 16,
            ..Limits::DEFAULT
        };
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        // 8 bytes of extension, 8 of trailer (`X-T: ab` and its CRLF... 9): one over.
        let over = format!("{head}1;abcdefg\r\nx\r\n0\r\nX-T: ab\r\n\r\n");
        assert_eq!(
            read_split(over.as_bytes(), &[], false, limits),
            Err(ResponseError::ChunkMetadataTooLarge)
        );
        let within = format!("{head}1;abcdefg\r\nx\r\n0\r\nX-T: a\r\n\r\n");
        assert_eq!(
            read_split(within.as_bytes(), &[], false, limits).unwrap().2,
            b"x"
        );
        // Plain chunk-size lines cost nothing: many chunks are fine.
        let many = format!("{head}{}0\r\n\r\n", "1\r\nx\r\n".repeat(1000));
        assert_eq!(
            read_split(many.as_bytes(), &[], false, limits)
                .unwrap()
                .2
                .len(),
            1000
        );
    }

    #[test]
    fn a_chunk_size_has_at_most_16_digits() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        let ok = format!("{head}{}1\r\nx\r\n0\r\n\r\n", "0".repeat(15));
        assert_eq!(body(ok.as_bytes()), b"x");
        let long = format!("{head}{}1\r\nx\r\n0\r\n\r\n", "0".repeat(16));
        assert_eq!(error(long.as_bytes()), ResponseError::BadChunk);
    }

    #[test]
    fn an_incomplete_size_line_longer_than_the_budget_is_an_error() {
        let mut r = AnswerReader::new(false);
        r.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;")
            .unwrap();
        let ext = vec![b'a'; 1024];
        let mut result = Ok(Progress::NeedMore);
        for _ in 0..9 {
            result = r.feed(&ext);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ResponseError::ChunkMetadataTooLarge));
        // And an endless trailer line the same.
        let mut r = AnswerReader::new(false);
        r.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: ")
            .unwrap();
        let big = vec![b'a'; 9 * 1024];
        assert_eq!(r.feed(&big), Err(ResponseError::ChunkMetadataTooLarge));
    }

    #[test]
    fn malformed_chunk_lines_are_errors() {
        let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for chunks in [
            "zz\r\n",
            "\r\n",
            "1\nx\r\n0\r\n\r\n",
            "1\r\nxy\r\n",
            "1\r\nx\n0\r\n\r\n",
            "1x\r\n",
            "1;a\x01\r\n",
            "1 2\r\n",
            "0\r\nNoColon\r\n\r\n",
            "0\r\n: empty name\r\n\r\n",
            "0\r\n folded\r\n\r\n",
            "0\r\nX: a\nY: b\r\n\r\n",
            "0\r\n\n",
            "0\r\n\rX",
        ] {
            let raw = format!("{head}{chunks}");
            assert_eq!(error(raw.as_bytes()), ResponseError::BadChunk, "{chunks:?}");
        }
    }

    #[test]
    fn an_answer_must_start_with_its_status_line() {
        // At the first byte that cannot start one: nothing more is waited for.
        for raw in [
            &b"\r\nHTTP/1.1 200 OK\r\n\r\n"[..],
            b"SSH-2.0",
            b"X",
            b"HTTP/",
            b"HTTX",
        ] {
            let mut r = AnswerReader::new(false);
            let got = r.feed(raw);
            if raw == b"HTTP/" {
                assert_eq!(got, Ok(Progress::NeedMore));
            } else {
                assert_eq!(got, Err(ResponseError::Malformed), "{raw:?}");
            }
        }
        for raw in [
            &b"HTTP/1.1 abc\r\n\r\n"[..],
            b"HTTP/2 200\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\n\r\n",
        ] {
            assert_eq!(error(raw), ResponseError::Malformed, "{raw:?}");
        }
    }

    #[test]
    fn a_head_over_the_limit_is_an_error() {
        let limits = Limits {
            head: 64,
            ..Limits::DEFAULT
        };
        let raw = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(64));
        assert_eq!(
            read_split(raw.as_bytes(), &[], false, limits),
            Err(ResponseError::HeadTooLarge)
        );
        let many: String = (0..MAX_FIELDS + 1)
            .map(|i| format!("X-{i}: a\r\n"))
            .collect();
        let raw = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert_eq!(error(raw.as_bytes()), ResponseError::HeadTooLarge);
    }

    #[test]
    fn status_codes_outside_100_to_599_are_malformed() {
        for raw in [
            &b"HTTP/1.1 099 X\r\n\r\n"[..],
            b"HTTP/1.1 600 X\r\n\r\n",
            b"HTTP/1.1 000 X\r\n\r\n",
        ] {
            assert_eq!(error(raw), ResponseError::Malformed, "{raw:?}");
        }
        assert_eq!(
            answer(b"HTTP/1.1 599 X\r\nContent-Length: 0\r\n\r\n")
                .head
                .status,
            599
        );
    }

    #[test]
    fn http_1_0_persists_only_when_asked_and_close_wins() {
        let reusable = |raw: &[u8]| answer(raw).reusable;
        assert!(!reusable(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(reusable(
            b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!reusable(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ));
        for both in ["close, keep-alive", "keep-alive, close"] {
            let raw = format!("HTTP/1.1 200 OK\r\nConnection: {both}\r\nContent-Length: 0\r\n\r\n");
            assert!(!reusable(raw.as_bytes()), "{both}");
        }
    }

    #[test]
    fn fields_named_by_connection_are_not_relayed() {
        let a = answer(
            b"HTTP/1.1 200 OK\r\nConnection: X-Hop, keep-alive\r\nX-Hop: 1\r\nx-hop: 2\r\n\
              Keep-Alive: timeout=5\r\nX-Kept: 3\r\nContent-Length: 0\r\n\r\n",
        );
        let fields: Vec<_> = a.head.fields(&a.raw_head).collect();
        assert_eq!(fields, [(b"X-Kept".as_slice(), b"3".as_slice())]);
    }

    #[test]
    fn a_connection_that_ends_during_the_answer_is_truncated_and_before_it_no_answer() {
        assert_eq!(AnswerReader::new(false).end(), Err(ResponseError::NoAnswer));
        for partial in [
            &b"HTTP/1.1 200"[..],
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        ] {
            assert_eq!(
                read_to_close(partial),
                Err(ResponseError::Truncated),
                "{partial:?}"
            );
        }
    }

    #[test]
    fn the_reader_returns_its_first_error_ever_after() {
        let mut r = AnswerReader::new(false);
        assert_eq!(
            r.feed(b"HTTP/1.1 101 X\r\n\r\n"),
            Err(ResponseError::Upgrade)
        );
        assert_eq!(
            r.feed(b"HTTP/1.1 200 OK\r\n\r\n"),
            Err(ResponseError::Upgrade)
        );
        assert_eq!(r.end(), Err(ResponseError::Upgrade));
        assert!(r.answer().is_none());
    }

    #[test]
    fn causes_are_distinct() {
        let all = ResponseError::ALL;
        let causes: std::collections::HashSet<_> = all.iter().map(|e| e.cause()).collect();
        assert_eq!(causes.len(), all.len());
    }

    /// Answers of every framing, well-formed or not, for the properties below.
    fn answers() -> impl Strategy<Value = Vec<u8>> {
        let body = proptest::collection::vec(any::<u8>(), 0..64);
        let junk = proptest::collection::vec(any::<u8>(), 0..16);
        (0usize..8, body, 1usize..9, junk).prop_map(|(kind, body, chunk, junk)| {
            let mut raw = match kind {
                0 => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes(),
                1 | 2 => {
                    let mut raw = if kind == 1 {
                        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec()
                    } else {
                        b"HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nContent-Length: 1\n\n".to_vec()
                    };
                    for piece in body.chunks(chunk) {
                        raw.extend_from_slice(format!("{:x};e=1\r\n", piece.len()).as_bytes());
                        raw.extend_from_slice(piece);
                        raw.extend_from_slice(b"\r\n");
                    }
                    raw.extend_from_slice(b"0\r\nT: 1\r\n\r\n");
                    return [raw, junk].concat();
                }
                3 => b"HTTP/1.0 200 OK\r\n\r\n".to_vec(),
                4 => b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\n".to_vec(),
                5 => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(),
                6 => b"HTTP/1.1 200 OK\r\nContent-Length: 2, 3\r\n\r\n".to_vec(),
                _ => Vec::new(),
            };
            raw.extend_from_slice(&body);
            raw.extend_from_slice(&junk);
            raw
        })
    }

    proptest! {
        #[test]
        fn the_outcome_does_not_depend_on_how_the_bytes_arrive(
            raw in answers(),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            end in any::<bool>(),
        ) {
            let limits = Limits { head: 256, body: 48, chunk_metadata: 24 };
            let whole = read_split(&raw, &[], end, limits);
            prop_assert_eq!(read_split(&raw, &cuts, end, limits), whole.clone());
            let bytewise: Vec<usize> = (0..raw.len()).collect();
            prop_assert_eq!(read_split(&raw, &bytewise, end, limits), whole);
        }

        #[test]
        fn chunked_bodies_decode_to_what_was_chunked(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            chunk in 1usize..40,
            cuts in proptest::collection::vec(any::<usize>(), 0..40),
        ) {
            let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for piece in data.chunks(chunk) {
                raw.extend_from_slice(format!("{:X}\r\n", piece.len()).as_bytes());
                raw.extend_from_slice(piece);
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(b"0\r\n\r\n");
            let (_, _, body, used, reusable) = read_split(&raw, &cuts, false, Limits::DEFAULT).unwrap();
            prop_assert_eq!(body, data);
            prop_assert_eq!(used, raw.len());
            prop_assert!(reusable);
        }

        #[test]
        fn reading_any_bytes_never_panics(
            raw in proptest::collection::vec(any::<u8>(), 0..200),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let _ = read_split(&raw, &cuts, true, Limits::DEFAULT);
            let mut prefixed = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            prefixed.extend_from_slice(&raw);
            let _ = read_split(&prefixed, &cuts, true, Limits::DEFAULT);
        }
    }
}
