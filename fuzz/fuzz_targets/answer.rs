//! `exchange::response::AnswerReader`: an upstream's answer read from hostile bytes, fed in the
//! splits a socket's reads could make.
//!
//! Input: a flag byte (bit 0 the request was a HEAD, bit 1 the connection ends after the bytes,
//! bit 2 small limits: 512-byte heads, 256-byte bodies, 64 bytes of chunk metadata), a count of
//! read boundaries (low 4 bits), that many bytes (each the length of a read, 1 to 256), then the
//! bytes of the connection.
//!
//! Invariants:
//! - No panic; the outcome (the answer, its error, or how much it awaits) is the same fed whole,
//!   at the input's read boundaries, and a byte at a time; feeding the answer's own bytes alone
//!   gives the same answer.
//! - The bytes used are at most those fed, and what `feed` says it used adds up to them.
//! - A final head is never 1xx; it is the head that a plain reading of the bytes (each head ends
//!   at its first empty line, interim ones skipped) finds; within the head limit.
//! - The relayed body is the framing's body, checked against references written apart: the next
//!   `n` bytes for a length (which every Content-Length value of the head states, without a
//!   Transfer-Encoding), a reference chunked decoder's data (a Transfer-Encoding was sent), the
//!   rest of the bytes when the connection ended, nothing for 204, 304 and answers to HEAD; and
//!   the answer took exactly the bytes the framing says; within the body limit, and chunk
//!   extensions and trailers within theirs.
//! - Reusable only when the framing (length or chunked) ended exactly at the last byte fed, the
//!   connection did not end, the head did not close it, and no Content-Length came beside a
//!   Transfer-Encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate::exchange::response::{
    Answer, AnswerReader, Framing, Limits, Progress, ResponseError,
};
use tokengate_fuzz::{field_values, reference_chunked, reference_final_head, show};

const SMALL: Limits = Limits {
    head: 512,
    body: 256,
    chunk_metadata: 64,
};

/// What came of feeding a reader.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Still waiting: whether its final head was read, and the bytes it took.
    Waiting(bool, usize),
    Failed(ResponseError),
    Done(Done),
}

#[derive(Debug, PartialEq)]
struct Done {
    head: tokengate::exchange::response::Head,
    raw_head: Vec<u8>,
    body: Vec<u8>,
    wire_len: usize,
    reusable: bool,
}

impl From<Answer> for Done {
    fn from(a: Answer) -> Done {
        Done {
            head: a.head,
            raw_head: a.raw_head.to_vec(),
            body: a.body.to_vec(),
            wire_len: a.wire_len,
            reusable: a.reusable,
        }
    }
}

/// Feeds `stream` in pieces of the given lengths (the last piece takes the rest), then the end
/// of the connection if `end`.
fn feed(stream: &[u8], reads: &[usize], to_head: bool, end: bool, limits: Limits) -> Outcome {
    let mut r = AnswerReader::with_limits(to_head, limits);
    let (mut at, mut used_total) = (0, 0);
    let mut reads = reads.iter();
    while at < stream.len() || at == 0 {
        let len = reads.next().copied().unwrap_or(stream.len() - at);
        let next = (at + len).min(stream.len());
        match r.feed(&stream[at..next]) {
            Ok(Progress::NeedMore) => used_total += next - at,
            Ok(Progress::Done { used }) => {
                assert!(used <= next - at);
                used_total += used;
            }
            Err(e) => return Outcome::Failed(e),
        }
        at = next;
        if stream.is_empty() {
            break;
        }
    }
    if end {
        if let Err(e) = r.end() {
            return Outcome::Failed(e);
        }
    }
    assert_eq!(r.wire_len(), used_total, "the bytes `feed` said it used");
    assert!(r.wire_len() <= stream.len());
    if !r.is_done() {
        return Outcome::Waiting(r.has_head(), r.wire_len());
    }
    Outcome::Done(r.answer().expect("a done reader has its answer").into())
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((&count, rest)) = rest.split_first() else {
        return;
    };
    let count = usize::from(count & 15).min(rest.len());
    let (lengths, stream) = rest.split_at(count);
    let reads: Vec<usize> = lengths.iter().map(|&l| usize::from(l) + 1).collect();
    let (to_head, end) = (flags & 1 != 0, flags & 2 != 0);
    let limits = if flags & 4 != 0 {
        SMALL
    } else {
        Limits::DEFAULT
    };

    let whole = feed(stream, &[], to_head, end, limits);
    assert_eq!(
        feed(stream, &reads, to_head, end, limits),
        whole,
        "split at {reads:?}"
    );
    assert_eq!(
        feed(stream, &vec![1; stream.len()], to_head, end, limits),
        whole,
        "a byte at a time"
    );

    let Outcome::Done(a) = whole else {
        return;
    };
    let wire = a.wire_len;
    assert!(wire <= stream.len());
    // The answer's own bytes give the same answer (reusable or not: bytes may have followed).
    let Outcome::Done(alone) = feed(&stream[..wire], &[], to_head, end, limits) else {
        panic!("the answer's own bytes are not an answer");
    };
    assert_eq!(
        (&alone.head, &alone.raw_head, &alone.body, alone.wire_len),
        (&a.head, &a.raw_head, &a.body, a.wire_len)
    );

    // The final head, found the plain way.
    let (start, end_of_head, status) =
        reference_final_head(stream).expect("a final head the plain reading finds");
    assert_eq!(a.head.status, status);
    assert!(!(100..200).contains(&status), "final head {status}");
    assert_eq!(
        a.raw_head,
        &stream[start..end_of_head],
        "{:?}",
        show(stream)
    );
    assert!(end_of_head <= limits.head, "heads of {end_of_head} bytes");
    for (name, _) in a.head.fields(&a.raw_head) {
        for framing in ["content-length", "transfer-encoding", "connection"] {
            assert!(
                !name.eq_ignore_ascii_case(framing.as_bytes()),
                "{framing} relayed"
            );
        }
    }

    // The body, as its framing says.
    let after = &stream[end_of_head..];
    let lengths = field_values(&a.raw_head, "content-length");
    let codings = field_values(&a.raw_head, "transfer-encoding");
    let took = match a.head.framing {
        Framing::Empty => {
            assert!(
                to_head || status == 204 || status == 304,
                "no body on a {status}"
            );
            assert!(a.body.is_empty());
            0
        }
        Framing::Length(n) => {
            assert!(codings.is_empty());
            assert!(!lengths.is_empty());
            for v in &lengths {
                for e in v.split(|&b| b == b',') {
                    let e = std::str::from_utf8(e.trim_ascii()).expect("digits");
                    assert_eq!(e.parse::<usize>().ok(), Some(n), "Content-Length {e}");
                }
            }
            assert_eq!(a.body, &after[..n]);
            n
        }
        Framing::Chunked => {
            assert!(!codings.is_empty());
            let (data, took, metadata) =
                reference_chunked(after).expect("a chunked body the reference decodes");
            assert_eq!(a.body, data);
            assert!(
                metadata <= limits.chunk_metadata,
                "{metadata} bytes of metadata"
            );
            took
        }
        Framing::UntilClose => {
            assert!(end, "a body until the close, without a close");
            assert!(lengths.is_empty() && codings.is_empty());
            assert_eq!(a.body, after);
            after.len()
        }
    };
    assert_eq!(wire, end_of_head + took, "the answer's bytes");
    assert!(a.body.len() <= limits.body);

    if a.reusable {
        assert!(
            wire == stream.len() && !end,
            "reused with bytes after, or closed"
        );
        assert!(matches!(
            a.head.framing,
            Framing::Length(_) | Framing::Chunked
        ));
        assert!(a.head.keep_alive);
        assert!(
            lengths.is_empty() || codings.is_empty(),
            "TE and CL, reused"
        );
    }
});
