//! `request_stream::RequestStream`: where the connection guard (`conn.rs`) thinks each request
//! head on a connection ends, against where httparse (Pingora's parser) ends it, on the same
//! bytes, pipelined requests and their bodies included, cut at read boundaries the input chooses.
//!
//! Input: a byte `k`, then `k % 8` cut lengths (one byte each), then the connection's bytes.
//!
//! The reference is written here, on the whole buffer at once: each head parsed by
//! `httparse::Request::parse` (with Pingora's 256 fields), its body framed as Pingora frames it
//! (the last Transfer-Encoding's last coding `chunked`, else every Content-Length equal, else
//! none), chunked bodies read with `httparse::parse_chunk_size` and strict CRLFs.
//!
//! Invariants:
//! - the same events whatever the cuts (one piece, or the input's cuts);
//! - every head end the reference finds is reported, at the same offset, in order, and no other
//!   one before the reference stops;
//! - where the reference runs out of bytes, the stream reports nothing more and says where it is:
//!   idle at a boundary, in a head, or in a body;
//! - a head over the limit (or more than `MAX_EMPTY_LINES` empty lines before a request line) is
//!   refused, and only such a head;
//! - where Pingora would refuse a head's framing, the stream is lost (its guard keeps the
//!   deadline on) and reports nothing more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate::request_stream::{Event, HeadRefusal, Position, RequestStream, MAX_EMPTY_LINES};

/// A small head limit, so that refusals are reached.
const MAX_HEAD: usize = 512;

/// Where the reference stopped following the bytes.
#[derive(Debug, PartialEq)]
enum Stop {
    /// Out of bytes: at a boundary, inside a head, inside a body.
    Idle,
    InHead,
    InBody,
    TooLarge,
    EmptyLines,
    /// A head whose framing Pingora refuses.
    BadFraming,
    /// Anything else the reference does not judge (a head httparse refuses, huge chunk lines).
    Unspecified,
}

fuzz_target!(|data: &[u8]| {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(k % 8).min(rest.len());
    let (cuts, stream) = rest.split_at(n);
    let (ends, stop) = reference(stream);

    let whole = events(stream, &[]);
    let cut = events(stream, cuts);
    assert_eq!(whole, cut, "the cuts changed what was found");
    let (found, refused, position) = whole;

    assert!(
        found.len() >= ends.len() && found[..ends.len()] == ends[..],
        "head ends {found:?}, expected {ends:?} then {stop:?}"
    );
    let was_refused = refused.is_some();
    match stop {
        Stop::Idle | Stop::InHead | Stop::InBody => {
            assert_eq!(found, ends, "{stop:?}");
            assert_eq!(refused, None);
            let expected = match stop {
                Stop::Idle => Position::Idle,
                Stop::InHead => Position::Head,
                _ => Position::Body,
            };
            assert_eq!(position, expected);
        }
        Stop::TooLarge => {
            assert_eq!(found, ends);
            assert!(
                matches!(refused, Some(HeadRefusal::TooLarge { .. })),
                "{refused:?}"
            );
        }
        Stop::EmptyLines => {
            assert_eq!(found, ends);
            assert_eq!(refused, Some(HeadRefusal::EmptyLines));
        }
        Stop::BadFraming => {
            assert_eq!(found, ends);
            assert_eq!((refused, position), (None, Position::Lost));
        }
        Stop::Unspecified => {}
    }
    if was_refused {
        assert_eq!(position, Position::Lost);
    }
});

/// The head ends found in `stream` fed in pieces (`cuts`, then the rest whole), the refusal, and
/// where the stream is at the end.
fn events(stream: &[u8], cuts: &[u8]) -> (Vec<usize>, Option<HeadRefusal>, Position) {
    let mut s = RequestStream::new(MAX_HEAD);
    let mut ends = Vec::new();
    let mut base = 0;
    let mut pieces = Vec::new();
    for &c in cuts {
        let end = (base + usize::from(c)).min(stream.len());
        pieces.push(&stream[base..end]);
        base = end;
    }
    pieces.push(&stream[base..]);
    let mut offset = 0;
    for piece in pieces {
        let mut at = 0;
        while at < piece.len() {
            let (n, event) = s.step(&piece[at..]);
            assert!(at + n <= piece.len());
            at += n;
            match event {
                Some(Event::HeadEnd) => ends.push(offset + at),
                Some(Event::Refused(r)) => return (ends, Some(r), s.position()),
                None => assert_eq!(at, piece.len(), "no event, yet bytes left"),
            }
        }
        offset += piece.len();
    }
    (ends, None, s.position())
}

/// The head ends of `stream` as httparse and Pingora's framing read it, and where that stopped.
fn reference(stream: &[u8]) -> (Vec<usize>, Stop) {
    let mut ends = Vec::new();
    let mut pos = 0;
    loop {
        let rest = &stream[pos..];
        if rest.is_empty() {
            return (ends, Stop::Idle);
        }
        if empty_lines(rest) > MAX_EMPTY_LINES {
            return (ends, Stop::EmptyLines);
        }
        let mut fields = [httparse::EMPTY_HEADER; 256];
        let mut req = httparse::Request::new(&mut fields);
        let n = match req.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if rest.len() > MAX_HEAD => {
                return (ends, Stop::TooLarge)
            }
            Ok(httparse::Status::Partial) => return (ends, Stop::InHead),
            Err(_) => return (ends, Stop::Unspecified),
        };
        if n > MAX_HEAD {
            return (ends, Stop::TooLarge);
        }
        pos += n;
        ends.push(pos);
        let body = match framing(&req) {
            Some(b) => b,
            None => return (ends, Stop::BadFraming),
        };
        let rest = &stream[pos..];
        match body {
            Body::Length(len) if len > rest.len() as u64 => return (ends, Stop::InBody),
            Body::Length(len) => pos += len as usize,
            Body::Chunked => match chunked_end(rest) {
                Chunked::End(n) => pos += n,
                Chunked::More => return (ends, Stop::InBody),
                Chunked::Invalid => return (ends, Stop::BadFraming),
                Chunked::Unspecified => return (ends, Stop::Unspecified),
            },
        }
    }
}

/// Complete empty lines (`\n`, `\r\n`) at the start of `b`, as httparse skips them.
fn empty_lines(mut b: &[u8]) -> usize {
    let mut n = 0;
    loop {
        b = match b {
            [b'\n', rest @ ..] | [b'\r', b'\n', rest @ ..] => rest,
            _ => return n,
        };
        n += 1;
    }
}

enum Body {
    Length(u64),
    Chunked,
}

/// Pingora's framing of a request body (`validate_request`, `init_body_reader`).
fn framing(req: &httparse::Request<'_, '_>) -> Option<Body> {
    let te = req
        .headers
        .iter()
        .rev()
        .find(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    if let Some(te) = te {
        let last = match te.value.iter().rposition(|&b| b == b',') {
            Some(i) => &te.value[i + 1..],
            None => te.value,
        };
        let chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        return (req.version != Some(0) && chunked).then_some(Body::Chunked);
    }
    let mut length: Option<u64> = None;
    for h in req.headers.iter() {
        if !h.name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        // http::HeaderValue::to_str: visible ASCII (and tab) only.
        if !h
            .value
            .iter()
            .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        {
            return None;
        }
        for v in h.value.split(|&b| b == b',') {
            let v = v.trim_ascii();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let n = std::str::from_utf8(v).ok()?.parse::<u64>().ok()?;
            if length.is_some_and(|l| l != n) {
                return None;
            }
            length = Some(n);
        }
    }
    Some(Body::Length(length.unwrap_or(0)))
}

enum Chunked {
    /// The body's length.
    End(usize),
    More,
    Invalid,
    Unspecified,
}

/// Where a chunked body at the start of `b` ends, as Pingora's body reader reads it.
fn chunked_end(b: &[u8]) -> Chunked {
    let mut pos = 0;
    loop {
        let line = &b[pos..];
        let (used, size) = match httparse::parse_chunk_size(line) {
            Ok(httparse::Status::Complete(c)) => c,
            // Pingora bounds an incomplete chunk-size line per read: long ones are not judged.
            Ok(httparse::Status::Partial) if line.len() > 8000 => return Chunked::Unspecified,
            Ok(httparse::Status::Partial) => return Chunked::More,
            Err(_) => return Chunked::Invalid,
        };
        if used > 8000 {
            return Chunked::Unspecified;
        }
        pos += used;
        if size == 0 {
            return trailers_end(b, pos);
        }
        let Some(data_end) = usize::try_from(size).ok().and_then(|s| pos.checked_add(s)) else {
            return Chunked::More;
        };
        if data_end > b.len() {
            return Chunked::More;
        }
        pos = data_end;
        match &b[pos..] {
            [b'\r', b'\n', ..] => pos += 2,
            [] | [b'\r'] => return Chunked::More,
            _ => return Chunked::Invalid,
        }
    }
}

/// After the last chunk's line (at `pos`): trailer lines ended by CRLF, then CRLF.
fn trailers_end(b: &[u8], mut pos: usize) -> Chunked {
    let start = pos;
    loop {
        if pos - start > 60_000 {
            return Chunked::Unspecified;
        }
        match &b[pos..] {
            [b'\r', b'\n', ..] => return Chunked::End(pos + 2),
            [] | [b'\r'] => return Chunked::More,
            [b'\r', ..] | [b'\n', ..] => return Chunked::Invalid,
            _ => {}
        }
        // A trailer line: up to its CR, which an LF must follow.
        match b[pos..].iter().position(|&c| c == b'\r' || c == b'\n') {
            None => return Chunked::More,
            Some(i) if b[pos + i] == b'\n' => return Chunked::Invalid,
            Some(i) => match b.get(pos + i + 1) {
                None => return Chunked::More,
                Some(b'\n') => pos += i + 2,
                Some(_) => return Chunked::Invalid,
            },
        }
    }
}
