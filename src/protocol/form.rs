//! `application/x-www-form-urlencoded` bodies, handled strictly and without copying.
//!
//! RFC 6749 §3.2 and Appendix B: token requests carry their parameters in this format. A gateway
//! that rewrites credentials must forward every other parameter byte for byte, so the body is
//! split into raw pieces on `&`, names are decoded (to recognise `client%5Fid` as `client_id`),
//! values are checked, and only the pieces that change are re-encoded. `serde_urlencoded` is not
//! used here: it silently replaces malformed escapes and re-encodes everything on output.

use std::borrow::Cow;

/// Why a form body (or a form-encoded credential) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    /// A `%` not followed by two hexadecimal digits.
    #[error("malformed percent-escape")]
    MalformedEscape,
}

/// One `name=value` piece of a body, as raw slices of the original bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPair<'a> {
    /// The whole piece between two `&`, exactly as received.
    pub raw: &'a [u8],
    /// The still-encoded name (everything before the first `=`).
    pub name: &'a [u8],
    /// The still-encoded value (everything after the first `=`; empty when there is no `=`).
    pub value: &'a [u8],
}

/// Splits a body into its `&`-separated pieces, empty pieces included, in order.
///
/// Keeping empty pieces lets a caller rebuild the body byte for byte minus the pieces it removes.
pub fn pieces(body: &[u8]) -> impl Iterator<Item = RawPair<'_>> {
    body.split(|&b| b == b'&')
        .map(|raw| match raw.iter().position(|&b| b == b'=') {
            Some(eq) => RawPair {
                raw,
                name: &raw[..eq],
                value: &raw[eq + 1..],
            },
            None => RawPair {
                raw,
                name: raw,
                value: &[],
            },
        })
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Checks that every `%` in `input` starts a valid escape, without allocating.
pub fn validate(input: &[u8]) -> Result<(), FormError> {
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            match (input.get(i + 1), input.get(i + 2)) {
                (Some(&h), Some(&l)) if hex_digit(h).is_some() && hex_digit(l).is_some() => i += 3,
                _ => return Err(FormError::MalformedEscape),
            }
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// Decodes one form-encoded name or value: `+` is a space, `%XX` a byte. Strict: a malformed
/// escape is an error, never passed through. Borrows when there is nothing to decode.
pub fn decode(input: &[u8]) -> Result<Cow<'_, [u8]>, FormError> {
    if !input.iter().any(|&b| b == b'%' || b == b'+') {
        return Ok(Cow::Borrowed(input));
    }
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hi = input.get(i + 1).copied().and_then(hex_digit);
                let lo = input.get(i + 2).copied().and_then(hex_digit);
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => return Err(FormError::MalformedEscape),
                }
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(Cow::Owned(out))
}

/// Appends the form-urlencoding of `input` to `out` (WHATWG URL "application/x-www-form-urlencoded
/// serializer", which RFC 6749 Appendix B refers to): alphanumerics and `*-._` stay, space becomes
/// `+`, every other byte becomes `%XX`.
pub fn encode_into(input: &[u8], out: &mut String) {
    out.extend(form_urlencoded::byte_serialize(input));
}

/// The form-urlencoding of `input`, as a new string.
pub fn encode(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len());
    encode_into(input, &mut out);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pieces_keep_raw_bytes_and_empty_pieces() {
        let got: Vec<_> = pieces(b"a=1&&b&c=x=y").collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].name, b"a");
        assert_eq!(got[0].value, b"1");
        assert_eq!(got[1].raw, b"");
        assert_eq!(got[2].name, b"b");
        assert_eq!(got[2].value, b"");
        assert_eq!(got[3].name, b"c");
        assert_eq!(got[3].value, b"x=y");
    }

    #[test]
    fn decode_plus_is_space_and_escapes_are_bytes() {
        assert_eq!(&*decode(b"a+b%2Bc%25%41").unwrap(), b"a b+c%A");
        assert_eq!(&*decode(b"%C3%A9").unwrap(), "é".as_bytes());
        assert!(matches!(decode(b"plain").unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn decode_rejects_malformed_escapes() {
        for bad in [&b"%"[..], b"%4", b"%zz", b"a%g1", b"%%41", b"abc%"] {
            assert_eq!(decode(bad), Err(FormError::MalformedEscape), "{bad:?}");
            assert_eq!(validate(bad), Err(FormError::MalformedEscape), "{bad:?}");
        }
        assert_eq!(validate(b"%41%c3%A9+x"), Ok(()));
    }

    #[test]
    fn encode_matches_whatwg_serializer() {
        assert_eq!(encode(b"a b:+%&=/"), "a+b%3A%2B%25%26%3D%2F");
        assert_eq!(encode("é".as_bytes()), "%C3%A9");
        assert_eq!(encode(b"AZaz09*-._~"), "AZaz09*-._%7E");
        assert_eq!(encode(b"%41"), "%2541");
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(s in any::<Vec<u8>>()) {
            let enc = encode(&s);
            prop_assert!(validate(enc.as_bytes()).is_ok());
            prop_assert_eq!(decode(enc.as_bytes()).unwrap().into_owned(), s);
        }

        #[test]
        fn encoded_never_contains_separators(s in any::<String>()) {
            let enc = encode(s.as_bytes());
            prop_assert!(!enc.contains('&') && !enc.contains('=') && !enc.contains(' '));
        }

        #[test]
        fn pieces_rejoined_are_the_body(body in "[a-z=&%+0-9]{0,64}") {
            let joined: Vec<&[u8]> = pieces(body.as_bytes()).map(|p| p.raw).collect();
            prop_assert_eq!(joined.join(&b'&'), body.as_bytes());
        }

        #[test]
        fn decode_never_panics(s in any::<Vec<u8>>()) {
            let _ = decode(&s);
        }
    }
}
