//! Where the requests on one connection begin and end, read from the bytes the client sends, as
//! Pingora's HTTP/1 server reads them: the connection guard ([`crate::conn`]) holds each request
//! head to its deadline and size with it. Pure: bytes in, positions out.
//!
//! - A head (RFC 9112 §2.2) is any empty lines (a server ignores a few before a request line; at
//!   most [`MAX_EMPTY_LINES`]), the request line and the field lines, and ends at the first empty
//!   line after the request line, where httparse ends it. Lines end at LF (a CR before it is part
//!   of the line ending), as httparse reads them. Its bytes, empty lines included, count against
//!   the head limit.
//! - The body that follows is framed as Pingora frames it (RFC 9112 §6.3): `Transfer-Encoding`
//!   whose last coding is `chunked` (any other, or on HTTP/1.0, is refused by Pingora), else
//!   `Content-Length` (identical duplicates collapse; anything else is refused), else no body.
//!   Chunks are followed as Pingora's body reader does (§7.1: chunk-size lines as httparse reads
//!   them, a strict CRLF after each chunk's data, trailer lines ended by CRLF).
//! - After an upgrade (`101`), the connection is no longer HTTP ([`RequestStream::upgraded`]).
//!
//! Whatever it cannot follow (a head Pingora refuses, a framing error) leaves the stream
//! [`Position::Lost`]: the guard then treats the connection as reading a head, for as long as it
//! lasts, so that a misreading can only ever cut a connection early, never let a head go
//! unbounded.

/// Empty lines accepted before a request line (RFC 9112 §2.2 asks for at least one).
pub const MAX_EMPTY_LINES: usize = 8;
/// Pingora's own bound on a request's field lines (`MAX_HEADERS`): more, and it refuses the head.
const MAX_FIELDS: usize = 256;
/// Pingora's bound on a chunk-size line with its extensions (`PARTIAL_CHUNK_HEAD_LIMIT`).
const MAX_CHUNK_LINE: usize = 8 * 1024;
/// Pingora's bound on a chunked body's trailer section (`TRAILER_SIZE_LIMIT`).
const MAX_TRAILERS: usize = 64 * 1024;

/// Why a head is refused before it reaches the HTTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadRefusal {
    /// More bytes than the head limit without its end. `target` is the request-target of the
    /// request line, when that line was complete.
    TooLarge { target: Option<Vec<u8>> },
    /// More than [`MAX_EMPTY_LINES`] empty lines before a request line.
    EmptyLines,
}

impl HeadRefusal {
    /// The `reason` label of `tokengate_request_heads_refused_total`.
    pub fn as_str(&self) -> &'static str {
        match self {
            HeadRefusal::TooLarge { .. } => "too_large",
            HeadRefusal::EmptyLines => "empty_lines",
        }
    }
}

/// Where the stream is, after the bytes seen so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Between requests: the next byte starts a head.
    Idle,
    /// Inside a head (at least one of its bytes seen).
    Head,
    /// Inside a request body.
    Body,
    /// Upgraded: the bytes are no longer HTTP.
    Tunnel,
    /// Bytes it cannot follow (see the module docs).
    Lost,
}

/// What one step over the input found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A head ended; its bytes end at the returned count.
    HeadEnd,
    /// The head is refused; the bytes that made it so are not among those returned.
    Refused(HeadRefusal),
}

/// A connection's requests, followed from the bytes read (see the module docs).
#[derive(Debug)]
pub struct RequestStream {
    state: State,
    max_head: usize,
    /// The head so far, when it came in more than one piece (its end is parsed whole).
    pending: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head(Scan),
    Length(u64),
    Chunked(Chunk),
    Tunnel,
    Lost,
}

/// Where a head's scan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Scan {
    /// Bytes of the head so far.
    len: usize,
    empty_lines: usize,
    at: Line,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Before the request line, at the start of a line.
    Lead,
    /// Before the request line, after a CR at the start of a line.
    LeadCr,
    /// Inside the request line, or a field line.
    Inside,
    /// At the start of a line after the request line.
    Next,
    /// After a CR at the start of a line after the request line.
    NextCr,
}

impl Scan {
    const NEW: Scan = Scan {
        len: 0,
        empty_lines: 0,
        at: Line::Lead,
    };
}

/// Where a chunked body's reading is (RFC 9112 §7.1, as Pingora's body reader reads it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In a chunk-size line: `len` bytes of it so far.
    Size(SizeLine),
    /// In a chunk's data.
    Data(u64),
    /// After a chunk's data: its CR, then its LF.
    DataCr,
    DataLf,
    /// After the last chunk's line, at the start of a trailer line (or of the final CRLF);
    /// `trailers`: trailer bytes so far.
    TrailerStart {
        trailers: usize,
    },
    /// The final CRLF's CR seen.
    EndCr,
    /// Inside a trailer line.
    Trailer {
        trailers: usize,
    },
    /// A trailer line's CR seen.
    TrailerCr {
        trailers: usize,
    },
}

/// A chunk-size line as httparse's `parse_chunk_size` reads it: hex digits (at most 16), then
/// optional whitespace and `;` extensions, ended by CRLF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SizeLine {
    len: usize,
    size: u64,
    digits: u8,
    in_size: bool,
    in_ext: bool,
    cr: bool,
}

impl SizeLine {
    const NEW: SizeLine = SizeLine {
        len: 0,
        size: 0,
        digits: 0,
        in_size: true,
        in_ext: false,
        cr: false,
    };

    /// Takes one byte: `Ok(Some(size))` once the line is complete, `Err` if it is invalid.
    fn push(&mut self, b: u8) -> Result<Option<u64>, ()> {
        if self.cr {
            return if b == b'\n' {
                Ok(Some(self.size))
            } else {
                Err(())
            };
        }
        // An incomplete line longer than the bound is refused.
        self.len += 1;
        if self.len > MAX_CHUNK_LINE {
            return Err(());
        }
        let digit = match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        };
        match (b, digit) {
            (_, Some(d)) if self.in_size => {
                if self.digits > 15 {
                    return Err(());
                }
                self.digits += 1;
                self.size = self.size * 16 + u64::from(d);
            }
            (b'\r', _) => self.cr = true,
            (b';', _) if !self.in_ext => {
                self.in_ext = true;
                self.in_size = false;
            }
            (b'\t' | b' ', _) if !self.in_ext => self.in_size = false,
            _ if self.in_ext => {}
            _ => return Err(()),
        }
        Ok(None)
    }
}

impl RequestStream {
    /// A new connection's stream: its first head is next. `max_head`: the most bytes a head may
    /// have.
    pub fn new(max_head: usize) -> RequestStream {
        RequestStream {
            state: State::Head(Scan::NEW),
            max_head,
            pending: Vec::new(),
        }
    }

    pub fn position(&self) -> Position {
        match self.state {
            State::Head(s) if s.len == 0 => Position::Idle,
            State::Head(_) => Position::Head,
            State::Length(_) | State::Chunked(_) => Position::Body,
            State::Tunnel => Position::Tunnel,
            State::Lost => Position::Lost,
        }
    }

    /// The server switched protocols (a `101` went out): what follows is not HTTP.
    pub fn upgraded(&mut self) {
        self.state = State::Tunnel;
        self.pending = Vec::new();
    }

    /// Follows `input` up to the first event in it: how many of its bytes that took, and the
    /// event (`None`: all of `input` taken, nothing happened). On a refusal the count is where
    /// the refused bytes start (the bytes before it are fine to pass on).
    pub fn step(&mut self, input: &[u8]) -> (usize, Option<Event>) {
        let mut at = 0;
        while at < input.len() {
            match self.state {
                State::Head(scan) => return self.head(scan, input, at),
                State::Length(left) => {
                    let n = left.min((input.len() - at) as u64);
                    at += n as usize;
                    self.state = match left - n {
                        0 => State::Head(Scan::NEW),
                        left => State::Length(left),
                    };
                }
                State::Chunked(chunk) => at = self.chunked(chunk, input, at),
                State::Tunnel | State::Lost => return (input.len(), None),
            }
        }
        (at, None)
    }

    /// Follows a head from `input[start..]`.
    fn head(&mut self, mut scan: Scan, input: &[u8], start: usize) -> (usize, Option<Event>) {
        let mut at = start;
        while at < input.len() {
            let b = input[at];
            match (scan.at, b) {
                (Line::Lead | Line::LeadCr, b'\n') => {
                    scan.empty_lines += 1;
                    if scan.empty_lines > MAX_EMPTY_LINES {
                        self.state = State::Lost;
                        self.pending = Vec::new();
                        return (start, Some(Event::Refused(HeadRefusal::EmptyLines)));
                    }
                    scan.at = Line::Lead;
                    at += 1;
                }
                (Line::Lead, b'\r') => {
                    scan.at = Line::LeadCr;
                    at += 1;
                }
                (Line::Inside, _) => match memchr::memchr(b'\n', &input[at..]) {
                    Some(i) => {
                        at += i + 1;
                        scan.at = Line::Next;
                    }
                    None => at = input.len(),
                },
                (Line::Next, b'\r') => {
                    scan.at = Line::NextCr;
                    at += 1;
                }
                // An empty line after the request line: the head ends after its LF.
                (Line::Next | Line::NextCr, b'\n') => {
                    at += 1;
                    if scan.len + (at - start) > self.max_head {
                        return self.too_large(scan, input, start);
                    }
                    self.state = self.framing_of(&input[start..at]);
                    self.pending = Vec::new();
                    return (at, Some(Event::HeadEnd));
                }
                // The byte starts (or, after a CR, continues) a line's content.
                (Line::Lead | Line::LeadCr | Line::Next | Line::NextCr, _) => {
                    scan.at = Line::Inside;
                }
            }
            if scan.len + (at - start) > self.max_head {
                return self.too_large(scan, input, start);
            }
        }
        scan.len += at - start;
        self.pending.extend_from_slice(&input[start..at]);
        self.state = State::Head(scan);
        (at, None)
    }

    /// Refuses the head being read (`input[start..]` its latest bytes). The target is read from
    /// the head's first `max_head + 1` bytes, however they came.
    fn too_large(&mut self, scan: Scan, input: &[u8], start: usize) -> (usize, Option<Event>) {
        let over = (self.max_head + 1).saturating_sub(scan.len);
        let end = input.len().min(start + over);
        self.pending.extend_from_slice(&input[start..end]);
        let target = request_target(&self.pending).map(<[u8]>::to_vec);
        self.state = State::Lost;
        self.pending = Vec::new();
        (
            start,
            Some(Event::Refused(HeadRefusal::TooLarge { target })),
        )
    }

    /// The state after a complete head (`tail`: its bytes in the last piece, after `pending`).
    fn framing_of(&mut self, tail: &[u8]) -> State {
        let whole;
        let head = if self.pending.is_empty() {
            tail
        } else {
            self.pending.extend_from_slice(tail);
            whole = std::mem::take(&mut self.pending);
            &whole[..]
        };
        match body_framing(head) {
            Some(Framing::None) => State::Head(Scan::NEW),
            Some(Framing::Length(n)) => State::Length(n),
            Some(Framing::Chunked) => State::Chunked(Chunk::Size(SizeLine::NEW)),
            None => State::Lost,
        }
    }

    /// Follows a chunked body from `input[at..]`: where it stopped (the end of the input, or of
    /// the body).
    fn chunked(&mut self, mut chunk: Chunk, input: &[u8], mut at: usize) -> usize {
        while at < input.len() {
            chunk = match chunk {
                Chunk::Data(left) => {
                    let n = left.min((input.len() - at) as u64);
                    at += n as usize;
                    match left - n {
                        0 => Chunk::DataCr,
                        left => Chunk::Data(left),
                    }
                }
                other => {
                    at += 1;
                    match other.next(input[at - 1]) {
                        Step::Next(c) => c,
                        Step::End => {
                            self.state = State::Head(Scan::NEW);
                            return at;
                        }
                        Step::Invalid => {
                            self.state = State::Lost;
                            return input.len();
                        }
                    }
                }
            };
        }
        self.state = State::Chunked(chunk);
        at
    }
}

/// What a byte of a chunked body leads to.
enum Step {
    Next(Chunk),
    /// The body's last byte.
    End,
    Invalid,
}

impl Chunk {
    /// Takes one byte (in any state but `Data`, whose bytes are skipped in bulk).
    fn next(self, b: u8) -> Step {
        let next = match self {
            Chunk::Size(mut line) => match line.push(b) {
                Ok(None) => Some(Chunk::Size(line)),
                Ok(Some(0)) => Some(Chunk::TrailerStart { trailers: 0 }),
                Ok(Some(size)) => Some(Chunk::Data(size)),
                Err(()) => None,
            },
            Chunk::Data(left) => Some(Chunk::Data(left)),
            Chunk::DataCr => (b == b'\r').then_some(Chunk::DataLf),
            Chunk::DataLf => (b == b'\n').then_some(Chunk::Size(SizeLine::NEW)),
            Chunk::TrailerStart { trailers } => match b {
                b'\r' => Some(Chunk::EndCr),
                b'\n' => None,
                _ => Some(Chunk::Trailer {
                    trailers: trailers + 1,
                }),
            },
            Chunk::EndCr if b == b'\n' => return Step::End,
            Chunk::EndCr => None,
            Chunk::Trailer { trailers } => match b {
                b'\r' => Some(Chunk::TrailerCr { trailers }),
                b'\n' => None,
                _ if trailers >= MAX_TRAILERS => None,
                _ => Some(Chunk::Trailer {
                    trailers: trailers + 1,
                }),
            },
            Chunk::TrailerCr { trailers } => {
                (b == b'\n').then_some(Chunk::TrailerStart { trailers })
            }
        };
        next.map_or(Step::Invalid, Step::Next)
    }
}

/// How a request's body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// The framing of the body after `head` (a complete head, leading empty lines included), as
/// Pingora decides it; `None` where Pingora refuses the head's framing (or its fields).
fn body_framing(head: &[u8]) -> Option<Framing> {
    let head = skip_empty_lines(head);
    let line_end = memchr::memchr(b'\n', head)? + 1;
    let line = head[..line_end].trim_ascii_end();
    let http10 = line.ends_with(b"HTTP/1.0");
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let fields = match httparse::parse_headers(&head[line_end..], &mut fields) {
        Ok(httparse::Status::Complete((_, fields))) => fields,
        _ => return None,
    };
    let mut last_te = None;
    // RFC 9110 §8.6: identical values (duplicates, a comma list) are one; `Err`: they differ or
    // one is not a length.
    let mut length: Result<Option<u64>, ()> = Ok(None);
    for f in fields.iter() {
        if f.name.eq_ignore_ascii_case("transfer-encoding") {
            last_te = Some(f.value);
        } else if f.name.eq_ignore_ascii_case("content-length") {
            length = length.and_then(|known| {
                let value = std::str::from_utf8(f.value).map_err(|_| ())?;
                value.split(',').try_fold(known, |known, v| {
                    let n = digits(v.trim().as_bytes()).ok_or(())?;
                    match known {
                        Some(k) if k != n => Err(()),
                        _ => Ok(Some(n)),
                    }
                })
            });
        }
    }
    if let Some(te) = last_te {
        // RFC 9112 §6.1: HTTP/1.0 with Transfer-Encoding is faulty framing; chunked must be the
        // final coding (§6.3); Content-Length is then ignored. Pingora refuses the others.
        let last = te.rsplit(|&b| b == b',').next().unwrap_or_default();
        return (!http10 && last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
            .then_some(Framing::Chunked);
    }
    match length {
        Ok(None | Some(0)) => Some(Framing::None),
        Ok(Some(n)) => Some(Framing::Length(n)),
        Err(()) => None,
    }
}

/// A Content-Length value: ASCII digits only, no sign, within `u64`.
fn digits(v: &[u8]) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then_some(())
            .and_then(|()| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
    })
}

/// `head` without the empty lines before its request line.
fn skip_empty_lines(mut head: &[u8]) -> &[u8] {
    loop {
        head = match head {
            [b'\n', rest @ ..] | [b'\r', b'\n', rest @ ..] => rest,
            _ => return head,
        };
    }
}

/// The request-target of the request line that starts `head` (after empty lines), once that
/// line is complete.
pub fn request_target(head: &[u8]) -> Option<&[u8]> {
    let head = skip_empty_lines(head);
    let line = &head[..memchr::memchr(b'\n', head)?];
    let mut parts = line.split(|&b| b == b' ').filter(|p| !p.is_empty());
    parts.next()?;
    parts.next()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every head end in `input` fed in pieces of `cut` bytes, at its absolute offset, and a
    /// refusal (at `usize::MAX`: where it is found depends on the pieces).
    fn events(s: &mut RequestStream, input: &[u8], cut: usize) -> Vec<(usize, Event)> {
        let mut out = Vec::new();
        for (i, piece) in input.chunks(cut.max(1)).enumerate() {
            let base = i * cut.max(1);
            let mut at = 0;
            while at < piece.len() {
                let (n, e) = s.step(&piece[at..]);
                at += n;
                match e {
                    Some(Event::Refused(r)) => {
                        out.push((usize::MAX, Event::Refused(r)));
                        return out;
                    }
                    Some(e) => out.push((base + at, e)),
                    None => {}
                }
            }
        }
        out
    }

    fn ends(input: &[u8], cut: usize) -> Vec<usize> {
        events(&mut RequestStream::new(64 * 1024), input, cut)
            .into_iter()
            .map(|(at, _)| at)
            .collect()
    }

    #[test]
    fn a_head_ends_at_its_empty_line_however_the_bytes_are_cut() {
        let req = b"POST /t HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
        for cut in [1, 2, 3, 7, 100] {
            let mut s = RequestStream::new(1024);
            assert_eq!(
                events(&mut s, req, cut),
                [(req.len() - 3, Event::HeadEnd)],
                "cut {cut}"
            );
            assert_eq!(s.position(), Position::Idle, "the body was followed");
        }
        assert_eq!(ends(b"GET / HTTP/1.1\nHost: a\n\n", 5), [24]);
        let mut partial = RequestStream::new(1024);
        partial.step(b"GET / HTTP/1.1\r\nHost: a\r\n");
        assert_eq!(partial.position(), Position::Head);
    }

    #[test]
    fn empty_lines_before_a_request_line_are_part_of_its_head_never_its_end() {
        let mut s = RequestStream::new(1024);
        assert_eq!(s.step(b"\r\n\r\n"), (4, None));
        assert_eq!(s.position(), Position::Head, "the head has begun");
        assert_eq!(s.step(b"\n"), (1, None));
        assert_eq!(
            s.step(b"GET / HTTP/1.1\r\n\r\n"),
            (18, Some(Event::HeadEnd))
        );
        let many = b"\r\n".repeat(MAX_EMPTY_LINES + 1);
        let mut s = RequestStream::new(1024);
        assert_eq!(
            s.step(&many),
            (0, Some(Event::Refused(HeadRefusal::EmptyLines)))
        );
        assert_eq!(s.position(), Position::Lost);
    }

    #[test]
    fn a_head_over_the_limit_is_refused_with_its_target_once_the_request_line_is_in() {
        let mut s = RequestStream::new(64);
        let head = format!(
            "POST /env/as/token HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(60)
        );
        let (n, e) = s.step(head.as_bytes());
        assert_eq!(n, 0, "none of the piece that went over passes");
        assert_eq!(
            e,
            Some(Event::Refused(HeadRefusal::TooLarge {
                target: Some(b"/env/as/token".to_vec())
            }))
        );
        let mut s = RequestStream::new(64);
        assert_eq!(s.step(&[b'G'; 40]), (40, None));
        assert_eq!(
            s.step(&[b'G'; 40]).1,
            Some(Event::Refused(HeadRefusal::TooLarge { target: None }))
        );
        // A head of exactly the limit is fine.
        let exact = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(64 - 23));
        assert_eq!(exact.len(), 64);
        assert_eq!(
            RequestStream::new(64).step(exact.as_bytes()),
            (64, Some(Event::HeadEnd))
        );
    }

    #[test]
    fn bodies_are_skipped_by_length_and_by_chunks_and_pipelined_heads_found() {
        let two = b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\n\r\n\r\nxGET /b HTTP/1.1\r\n\r\n";
        assert_eq!(ends(two, 1), [39, two.len()]);
        assert_eq!(ends(two, 1000), [39, two.len()]);
        let chunked = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            4;ext=\"x\"\r\n\r\n\r\n\r\n0\r\nX-T: 1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        for cut in [1, 3, 1000] {
            assert_eq!(ends(chunked, cut), [48, chunked.len()], "cut {cut}");
        }
        // Identical lengths are one; a body on a GET is a body.
        let dup = b"GET /a HTTP/1.1\r\nContent-Length: 2, 2\r\nContent-Length: 2\r\n\r\nxxGET / HTTP/1.1\r\n\r\n";
        assert_eq!(ends(dup, 4), [60, dup.len()]);
    }

    #[test]
    fn framing_pingora_refuses_loses_the_stream() {
        for head in [
            &b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nBad Field: x\r\n\r\n",
        ] {
            let mut s = RequestStream::new(1024);
            assert_eq!(s.step(head).1, Some(Event::HeadEnd));
            assert_eq!(s.position(), Position::Lost, "{:?}", head.escape_ascii());
        }
        // Transfer-Encoding wins over Content-Length (RFC 9112 §6.3).
        let mut s = RequestStream::new(1024);
        let te_and_cl =
            b"POST / HTTP/1.1\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(ends(te_and_cl, 1000), [67]);
        let (n, _) = s.step(te_and_cl);
        s.step(&te_and_cl[n..]);
        assert_eq!(s.position(), Position::Idle);
        for bad_chunks in [&b"zz\r\n"[..], b"1\r\nab", b"0\r\nX\n", b"0\r\n\n"] {
            let mut s = RequestStream::new(1024);
            s.step(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
            s.step(bad_chunks);
            assert_eq!(
                s.position(),
                Position::Lost,
                "{:?}",
                bad_chunks.escape_ascii()
            );
        }
    }

    #[test]
    fn an_upgraded_stream_is_no_longer_read_as_requests() {
        let mut s = RequestStream::new(1024);
        s.step(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n");
        s.upgraded();
        assert_eq!(s.step(b"GET / HTTP/1.1\r\n\r\n"), (18, None));
        assert_eq!(s.position(), Position::Tunnel);
    }

    #[test]
    fn the_request_target_is_the_second_word_of_the_request_line() {
        assert_eq!(
            request_target(b"\r\nPOST http://a/x?y HTTP/1.1\r\nHost"),
            Some(&b"http://a/x?y"[..])
        );
        assert_eq!(request_target(b"POST /x HTTP/1.1"), None, "incomplete");
    }

    proptest! {
        #[test]
        fn how_the_bytes_are_cut_never_changes_what_is_found(
            input in proptest::collection::vec(
                prop_oneof![
                    Just(b"\r\n".to_vec()),
                    Just(b"\n".to_vec()),
                    Just(b"POST / HTTP/1.1\r\n".to_vec()),
                    Just(b"Content-Length: 3\r\n".to_vec()),
                    Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
                    Just(b"3\r\nabc\r\n0\r\n\r\n".to_vec()),
                    proptest::collection::vec(any::<u8>(), 0..8),
                ],
                0..20,
            ).prop_map(|v| v.concat()),
            cut in 1usize..16,
        ) {
            let max = 256;
            let whole = events(&mut RequestStream::new(max), &input, input.len().max(1));
            let cut_up = events(&mut RequestStream::new(max), &input, cut);
            prop_assert_eq!(whole, cut_up);
        }
    }
}
