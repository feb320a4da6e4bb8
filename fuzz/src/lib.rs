//! Checks shared by the fuzz targets: the invariants, written independently of the code under test
//! where that is practical (a reference decoder, a JSON member reader), so that a target does not
//! merely compare the gateway with itself.

use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use tokengate::protocol::OAuthError;

/// The codes of RFC 6749 §5.2, plus §4.1.2.1's `server_error` and `temporarily_unavailable` and
/// RFC 8628 §3.5's `slow_down`, which the gateway also answers with.
pub const RFC_ERROR_CODES: [&str; 9] = [
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "server_error",
    "temporarily_unavailable",
    "slow_down",
];

/// Every refusal is an RFC 6749 §5.2 answer: a JSON object with an `error` among the RFC codes
/// and an `error_description` of the characters §5.2 allows, with a status and headers that fit
/// the code.
pub fn check_refusal(e: &OAuthError) {
    let body = e.body();
    let v: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|err| panic!("error body is not JSON ({err}): {body:?}"));
    let obj = v.as_object().expect("error body is a JSON object");
    let code = obj
        .get("error")
        .and_then(|c| c.as_str())
        .expect("error body has an \"error\" string");
    assert!(RFC_ERROR_CODES.contains(&code), "unknown error code {code}");
    assert_eq!(code, e.code.as_str());
    let description = obj
        .get("error_description")
        .and_then(|d| d.as_str())
        .expect("error body has an \"error_description\" string");
    assert!(!description.is_empty(), "empty error_description");
    // RFC 6749 §5.2: error_description is %x20-21 / %x23-5B / %x5D-7E.
    assert!(
        description
            .bytes()
            .all(|b| matches!(b, 0x20..=0x21 | 0x23..=0x5B | 0x5D..=0x7E)),
        "error_description has a character RFC 6749 §5.2 forbids: {description:?}"
    );
    assert_eq!(obj.len(), 2, "error body has other members: {v}");

    assert!(
        matches!(
            e.status,
            400 | 401 | 405 | 408 | 413 | 429 | 502 | 503 | 504
        ),
        "unexpected status {}",
        e.status
    );
    match e.status {
        401 => assert_eq!(code, "invalid_client"),
        400 | 405 | 408 | 413 => assert_eq!(code, "invalid_request"),
        _ => {}
    }
    assert!(
        !e.www_authenticate || e.status == 401,
        "WWW-Authenticate on a {}",
        e.status
    );
    assert_eq!(
        e.allow.is_some(),
        e.status == 405,
        "Allow goes with 405 only"
    );
    let headers = e.headers("tokengate");
    assert!(headers.contains(&("Content-Type", "application/json".to_string())));
    assert!(headers.contains(&("Cache-Control", "no-store".to_string())));
}

/// The `&`-pieces of a form body; an empty body has none.
pub fn pieces(body: &[u8]) -> Vec<&[u8]> {
    if body.is_empty() {
        Vec::new()
    } else {
        body.split(|&b| b == b'&').collect()
    }
}

/// The name of a piece (before the first `=`), decoded by the reference decoder.
pub fn piece_name(piece: &[u8]) -> Option<Vec<u8>> {
    let name = match piece.iter().position(|&b| b == b'=') {
        Some(eq) => &piece[..eq],
        None => piece,
    };
    reference_decode(name)
}

/// The value of a piece (after the first `=`), decoded by the reference decoder.
pub fn piece_value(piece: &[u8]) -> Option<Vec<u8>> {
    match piece.iter().position(|&b| b == b'=') {
        Some(eq) => reference_decode(&piece[eq + 1..]),
        None => Some(Vec::new()),
    }
}

/// Whether a piece carries `client_id` or `client_secret`.
pub fn is_credential_piece(piece: &[u8]) -> bool {
    matches!(
        piece_name(piece).as_deref(),
        Some(b"client_id" | b"client_secret")
    )
}

/// The pieces of `body` that are not `client_id` or `client_secret`, in order.
pub fn other_pieces(body: &[u8]) -> Vec<&[u8]> {
    pieces(body)
        .into_iter()
        .filter(|p| !is_credential_piece(p))
        .collect()
}

/// The decoded values of every piece named `name`.
pub fn values_of(body: &[u8], name: &[u8]) -> Vec<Vec<u8>> {
    pieces(body)
        .into_iter()
        .filter(|p| piece_name(p).as_deref() == Some(name))
        .map(|p| piece_value(p).expect("a credential value the gateway wrote decodes"))
        .collect()
}

/// A form decoder written from the WHATWG/RFC text, independent of `protocol::form`: `+` is a
/// space, `%` must be followed by exactly two hexadecimal digits. `None`: a malformed escape.
pub fn reference_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = input.get(i + 1..i + 3)?;
                let s = std::str::from_utf8(hex).ok()?;
                if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(s, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    Some(out)
}

/// A JSON object's members in order (duplicates kept), values as their raw text.
pub struct Members(pub Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Members, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

/// Splits fuzz input into `n` parts at the first `n - 1` occurrences of `sep` (missing parts are
/// empty).
pub fn split_n<'a>(data: &'a [u8], sep: &[u8], n: usize) -> Vec<&'a [u8]> {
    let mut parts = Vec::with_capacity(n);
    let mut rest = data;
    while parts.len() + 1 < n {
        match rest.windows(sep.len()).position(|w| w == sep) {
            Some(at) => {
                parts.push(&rest[..at]);
                rest = &rest[at + sep.len()..];
            }
            None => break,
        }
    }
    parts.push(rest);
    while parts.len() < n {
        parts.push(&[]);
    }
    parts
}

/// A text view of bytes, for assertion messages.
pub fn show(b: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(b)
}
