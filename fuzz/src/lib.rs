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

/// Where an answer's final head lies in `stream` (start, end, status), read the plain way and
/// apart from `exchange::response`: a head ends at its first empty line after the status line
/// (RFC 9112 §2.1); a head whose status is 1xx other than 101 is interim and another follows
/// (RFC 9110 §15.2). `None` when no final head ends in `stream`.
pub fn reference_final_head(stream: &[u8]) -> Option<(usize, usize, u16)> {
    let mut start = 0;
    loop {
        let rest = &stream[start..];
        let end = first_empty_line_end(rest)?;
        let status = std::str::from_utf8(rest.get(9..12)?).ok()?.parse().ok()?;
        if (100..200).contains(&status) && status != 101 {
            start += end;
            continue;
        }
        return Some((start, start + end, status));
    }
}

/// Just after the first empty line (`\n` or `\r\n` alone) that follows the first line.
fn first_empty_line_end(b: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' {
            let line = &b[line_start..i];
            if line_start > 0 && (line.is_empty() || line == b"\r") {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}

/// The values of the fields named `name` (any case) in a head, trimmed: each line after the
/// first split at its first colon.
pub fn field_values<'a>(head: &'a [u8], name: &str) -> Vec<&'a [u8]> {
    head.split(|&b| b == b'\n')
        .skip(1)
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            line[..colon]
                .eq_ignore_ascii_case(name.as_bytes())
                .then(|| line[colon + 1..].trim_ascii())
        })
        .collect()
}

/// A chunked body at the start of `b` (RFC 9112 §7.1), decoded the plain way: its data, the bytes
/// it took, and the bytes of its chunk extensions (after a size's digits, to the line's CRLF) and
/// trailer field lines (CRLF included). `None` when it is not one, or does not end in `b`.
pub fn reference_chunked(b: &[u8]) -> Option<(Vec<u8>, usize, usize)> {
    let line_end = |from: usize| -> Option<usize> {
        let at = b.get(from..)?.windows(2).position(|w| w == b"\r\n")?;
        Some(from + at)
    };
    let (mut at, mut data, mut metadata) = (0, Vec::new(), 0);
    loop {
        let end = line_end(at)?;
        let line = &b[at..end];
        let digits = line.iter().take_while(|c| c.is_ascii_hexdigit()).count();
        if digits == 0 || digits > 16 {
            return None;
        }
        let size = u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()?;
        metadata += line.len() - digits;
        at = end + 2;
        if size == 0 {
            break;
        }
        let data_end = at.checked_add(usize::try_from(size).ok()?)?;
        data.extend_from_slice(b.get(at..data_end)?);
        if b.get(data_end..data_end + 2)? != b"\r\n" {
            return None;
        }
        at = data_end + 2;
    }
    loop {
        let end = line_end(at)?;
        if end == at {
            return Some((data, at + 2, metadata));
        }
        metadata += end - at + 2;
        at = end + 2;
    }
}
