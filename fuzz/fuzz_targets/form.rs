//! `protocol::form`: the strict splitter, decoder and validator, and the WHATWG encoder.
//!
//! Invariants:
//! - `decode` accepts exactly what a reference decoder accepts (never a malformed escape) and
//!   gives the same bytes; `validate` agrees with it; nothing to decode borrows the input.
//! - `encode` then `decode` is the identity, and the encoding holds only the WHATWG serializer's
//!   output bytes (never a separator `&`, `=` or a space).
//! - `pieces` keeps every byte: the pieces rejoined with `&` are the input.
//! - A query string that `query_carries_secrets` flags is refused by `check_head`.
#![no_main]

use std::borrow::Cow;

use libfuzzer_sys::fuzz_target;
use tokengate::protocol::form::{self, FormError};
use tokengate::protocol::{check_head, query_carries_secrets, BodyLimit, Head};
use tokengate_fuzz::{check_refusal, reference_decode, show};

fuzz_target!(|data: &[u8]| {
    // decode / validate against the reference decoder.
    let decoded = form::decode(data);
    match (&decoded, reference_decode(data)) {
        (Ok(got), Some(want)) => assert_eq!(**got, *want, "decode({:?})", show(data)),
        (Err(FormError::MalformedEscape), None) => {}
        (got, want) => panic!(
            "decode({:?}) = {got:?}, the reference says {want:?}",
            show(data)
        ),
    }
    assert_eq!(
        form::validate(data).is_ok(),
        decoded.is_ok(),
        "validate vs decode"
    );
    if !data.contains(&b'%') && !data.contains(&b'+') {
        assert!(
            matches!(decoded, Ok(Cow::Borrowed(_))),
            "nothing to decode is borrowed"
        );
    }

    // encode -> decode is the identity, on the raw input and on its decoding.
    for input in [Some(data), decoded.as_deref().ok()].into_iter().flatten() {
        let enc = form::encode(input);
        assert!(
            enc.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"*-._+%".contains(&b)),
            "encode({:?}) = {enc:?}",
            show(input)
        );
        assert_eq!(form::validate(enc.as_bytes()), Ok(()));
        assert_eq!(
            form::decode(enc.as_bytes()).as_deref(),
            Ok(input),
            "decode(encode(x)) != x"
        );
        let mut appended = String::from("x=");
        form::encode_into(input, &mut appended);
        assert_eq!(&appended[2..], enc);
    }

    // pieces keep every byte, in order.
    let pieces: Vec<_> = form::pieces(data).collect();
    assert_eq!(
        pieces.len(),
        data.iter().filter(|&&b| b == b'&').count() + 1
    );
    let joined = pieces.iter().map(|p| p.raw).collect::<Vec<_>>().join(&b'&');
    assert_eq!(joined, data);
    for p in &pieces {
        assert!(!p.raw.contains(&b'&'));
        match p.raw.iter().position(|&b| b == b'=') {
            Some(eq) => assert_eq!((p.name, p.value), (&p.raw[..eq], &p.raw[eq + 1..])),
            None => assert_eq!((p.name, p.value), (p.raw, &[][..])),
        }
    }

    // A query string with secrets never passes the head checks.
    let head = Head {
        method: b"POST",
        content_type: Some(b"application/x-www-form-urlencoded"),
        query: Some(data),
        content_length: Some(0),
    };
    let checked = check_head(&head, BodyLimit { max_bytes: 1024 });
    if query_carries_secrets(data) {
        assert!(
            checked.is_err(),
            "secrets in the query {:?} passed",
            show(data)
        );
    }
    if let Err(e) = &checked {
        check_refusal(e);
    }
});
