//! An upstream's HTTP/1.1 answer, read from bytes: the head (RFC 9112 §4–6: status line, fields,
//! how the body is framed and whether the connection stays open) and a chunked body's decoding
//! (RFC 9112 §7.1). Pure: bytes in, structure out.

use std::ops::Range;

/// The most fields an answer may have.
const MAX_FIELDS: usize = 96;

/// Why an answer could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("the upstream's answer is not HTTP/1.x")]
    Malformed,
    #[error("the upstream's answer has an invalid Content-Length")]
    BadLength,
    #[error("the upstream's answer has an invalid chunked body")]
    BadChunk,
}

/// How the body that follows a head ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (1xx, 204, 304, or an answer to HEAD).
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
    /// Every field but the hop-by-hop ones and those that frame the body (the gateway frames the
    /// answer it sends on), in order: where its name (as sent) and its value are in the parsed
    /// bytes, so that relaying them copies nothing ([`Head::fields`] reads them).
    pub fields: Vec<(Range<usize>, Range<usize>)>,
    pub framing: Framing,
    /// Whether the connection can carry another request afterwards.
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

/// Whether a comma-separated field value lists `token` (any case).
fn lists(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Parses a head at the start of `buf`: `Ok(None)` while it is incomplete. `to_head` says the
/// request was a HEAD (its answer has no body whatever it says).
pub fn parse_head(buf: &[u8], to_head: bool) -> Result<Option<Head>, ResponseError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut r = httparse::Response::new(&mut fields);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(ResponseError::Malformed),
    };
    let status = r.code.ok_or(ResponseError::Malformed)?;
    let http11 = r.version == Some(1);
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut close = !http11;
    let mut out = Vec::with_capacity(r.headers.len());
    for f in r.headers.iter() {
        let name = f.name;
        if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(f.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or(ResponseError::BadLength)?;
            // RFC 9112 §6.3: differing lengths are an error.
            if length.is_some_and(|l| l != n) {
                return Err(ResponseError::BadLength);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = f
                .value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            if !chunked {
                // Another final coding: the body ends when the connection does.
                close = true;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            if lists(f.value, "close") {
                close = true;
            } else if lists(f.value, "keep-alive") {
                close = false;
            }
        }
        if !hop_by_hop(name) {
            out.push((span(buf, name.as_bytes()), span(buf, f.value)));
        }
    }
    let framing = if to_head || (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        // RFC 9112 §6.3: Transfer-Encoding overrides Content-Length.
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Some(Head {
        status,
        reason: r.reason.map_or(0..0, |p| span(buf, p.as_bytes())),
        fields: out,
        keep_alive: !close && framing != Framing::UntilClose,
        framing,
        len,
    }))
}

/// Decodes a chunked body as it arrives.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk: this many data bytes left.
    Data(usize),
    /// After a chunk's data: expecting its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields until a blank line.
    Trailer,
    Done,
}

impl Chunked {
    /// Takes what can be decoded from the front of `input`, appends the data to `out`, and returns
    /// how many bytes of `input` it used. Call again with more input until [`Chunked::done`].
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ResponseError> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match self.state {
                ChunkState::Done => return Ok(at),
                ChunkState::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((used, 0))) => {
                        at += used;
                        self.state = ChunkState::Trailer;
                    }
                    Ok(httparse::Status::Complete((used, size))) => {
                        at += used;
                        let size = usize::try_from(size).map_err(|_| ResponseError::BadChunk)?;
                        self.state = ChunkState::Data(size);
                    }
                    Ok(httparse::Status::Partial) => return Ok(at),
                    Err(_) => return Err(ResponseError::BadChunk),
                },
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok(at);
                    }
                    let n = left.min(rest.len());
                    out.extend_from_slice(&rest[..n]);
                    at += n;
                    self.state = if n == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n)
                    };
                }
                ChunkState::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        at += 2;
                        self.state = ChunkState::Size;
                    }
                    [] | [b'\r'] => return Ok(at),
                    _ => return Err(ResponseError::BadChunk),
                },
                ChunkState::Trailer => match rest.windows(2).position(|w| w == b"\r\n") {
                    // A blank line ends the trailer; other trailer lines are dropped.
                    Some(0) => {
                        at += 2;
                        self.state = ChunkState::Done;
                    }
                    Some(i) => at += i + 2,
                    None => return Ok(at),
                },
            }
        }
    }

    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_head_tells_status_fields_framing_and_reuse() {
        let raw =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n\
                    Content-Length: 5\r\nConnection: keep-alive\r\n\r\nhello";
        let h = parse_head(raw, false).unwrap().unwrap();
        assert_eq!((h.status, &raw[h.reason.clone()]), (200, b"OK".as_slice()));
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert_eq!(&raw[h.len..], b"hello");
        let fields: Vec<_> = h.fields(raw).collect();
        assert_eq!(
            fields,
            [
                (b"Content-Type".as_slice(), b"application/json".as_slice()),
                (b"Cache-Control".as_slice(), b"no-store".as_slice())
            ]
        );
        assert_eq!(parse_head(&raw[..20], false), Ok(None));
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let head = |s: &str| parse_head(s.as_bytes(), false).unwrap().unwrap();
        assert_eq!(
            head(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n"
            )
            .framing,
            Framing::Chunked
        );
        let close = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(
            (close.framing, close.keep_alive),
            (Framing::UntilClose, false)
        );
        assert_eq!(
            head("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n").framing,
            Framing::Empty
        );
        assert_eq!(head("HTTP/1.1 304 X\r\n\r\n").framing, Framing::Empty);
        assert_eq!(
            head("HTTP/1.1 100 Continue\r\n\r\n").framing,
            Framing::Empty
        );
        assert!(
            !head("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keep_alive
        );
        assert!(!head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(
            head("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")
                .keep_alive
        );
        let to_head = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true);
        assert_eq!(to_head.unwrap().unwrap().framing, Framing::Empty);
    }

    #[test]
    fn bad_heads_are_errors() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 abc\r\n\r\n",
        ] {
            assert!(
                parse_head(bad, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn chunks_decode_with_extensions_and_trailers() {
        let raw = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let mut c = Chunked::default();
        let mut out = Vec::new();
        let used = c.decode(raw, &mut out).unwrap();
        assert!(c.done());
        assert_eq!(out, b"hello world");
        assert_eq!(&raw[used..], b"NEXT");
        assert!(Chunked::default().decode(b"zz\r\n", &mut out).is_err());
        assert!(Chunked::default().decode(b"1\r\nabX", &mut out).is_err());
    }

    proptest! {
        #[test]
        fn chunked_decoding_does_not_depend_on_how_the_bytes_arrive(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            chunk in 1usize..40,
            cuts in proptest::collection::vec(1usize..17, 1..40),
        ) {
            let mut raw = Vec::new();
            for piece in data.chunks(chunk) {
                raw.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                raw.extend_from_slice(piece);
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(b"0\r\n\r\n");
            let mut c = Chunked::default();
            let mut out = Vec::new();
            let mut pending: Vec<u8> = Vec::new();
            let mut at = 0;
            for cut in cuts.iter().cycle() {
                if at >= raw.len() { break; }
                let end = (at + cut).min(raw.len());
                pending.extend_from_slice(&raw[at..end]);
                at = end;
                let used = c.decode(&pending, &mut out).unwrap();
                pending.drain(..used);
            }
            prop_assert!(c.done());
            prop_assert_eq!(out, data);
        }

        #[test]
        fn parsing_any_bytes_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_head(&raw, false);
            let _ = Chunked::default().decode(&raw, &mut Vec::new());
        }
    }
}
