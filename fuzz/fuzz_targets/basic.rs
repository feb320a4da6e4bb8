//! `protocol::basic`: `parse_readings` on any header value, `encode` on any credentials.
//!
//! Input: a header value; its first NUL byte, when there is one, also splits it into a client_id
//! and a secret for the encoders.
//!
//! Invariants:
//! - A value whose scheme is not `Basic` is no reading; a `Basic` one decodes as base64 (padded
//!   or not) to `id:secret`, split at the first `:`; the standard reading is each half
//!   form-decoded (strictly), the raw one the halves as sent, given exactly when they may differ.
//! - `parse_authorization` agrees with `parse_readings`.
//! - RFC 6749 encoding round-trips every credential: `encode` then `parse_authorization` gives
//!   back the same id and secret; raw encoding round-trips through the raw reading and refuses a
//!   `:` in the id.
//! - `Debug` of credentials never shows the secret.
#![no_main]

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use tokengate::protocol::basic::{self, Authorization, BasicError, Readings};
use tokengate::protocol::{BasicEncoding, Credentials};
use tokengate_fuzz::{reference_decode, show};

const B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fuzz_target!(|data: &[u8]| {
    check_parse(data);
    let (id, secret) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b""[..]),
    };
    check_encode(&Credentials {
        client_id: id.to_vec(),
        secret: secret.to_vec().into(),
    });
});

/// What the value should read as, worked out independently.
fn expected(value: &[u8]) -> Result<Option<Readings>, BasicError> {
    let value = value.trim_ascii();
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(sp) => (&value[..sp], value[sp + 1..].trim_ascii()),
        None => (value, &b""[..]),
    };
    if !scheme.eq_ignore_ascii_case(b"Basic") {
        return Ok(None);
    }
    let plain = B64.decode(rest).map_err(|_| BasicError::NotBase64)?;
    let colon = plain
        .iter()
        .position(|&b| b == b':')
        .ok_or(BasicError::NoColon)?;
    let (id, secret) = (&plain[..colon], &plain[colon + 1..]);
    if id.is_empty() {
        return Err(BasicError::EmptyId);
    }
    let standard = match (reference_decode(id), reference_decode(secret)) {
        (Some(client_id), Some(secret)) => Ok(Credentials {
            client_id,
            secret: secret.into(),
        }),
        _ => Err(BasicError::MalformedEscape),
    };
    let raw = (plain.contains(&b'%') || plain.contains(&b'+')).then(|| Credentials {
        client_id: id.to_vec(),
        secret: secret.to_vec().into(),
    });
    Ok(Some(Readings { standard, raw }))
}

fn check_parse(value: &[u8]) {
    let got = basic::parse_readings(value);
    assert_eq!(got, expected(value), "parse_readings({:?})", show(value));
    let auth = basic::parse_authorization(value);
    match &got {
        Ok(None) => assert_eq!(auth, Ok(Authorization::Other)),
        Ok(Some(r)) => match &r.standard {
            Ok(c) => {
                assert_eq!(auth, Ok(Authorization::Basic(c.clone())));
                assert!(!c.client_id.is_empty());
                // What was read re-encodes and reads the same.
                check_encode(c);
            }
            Err(e) => assert_eq!(auth, Err(*e)),
        },
        Err(e) => assert_eq!(auth, Err(*e)),
    }
}

fn check_encode(c: &Credentials) {
    let header = basic::encode(c, BasicEncoding::Rfc6749).expect("RFC 6749 encoding never fails");
    assert!(header.starts_with("Basic ") && header.is_ascii());
    let back = basic::parse_authorization(header.as_bytes());
    if c.client_id.is_empty() {
        assert_eq!(back, Err(BasicError::EmptyId));
    } else {
        assert_eq!(
            back,
            Ok(Authorization::Basic(c.clone())),
            "RFC 6749 round trip"
        );
    }

    match basic::encode(c, BasicEncoding::Raw) {
        Err(e) => {
            assert_eq!(e, BasicError::ColonInRawId);
            assert!(c.client_id.contains(&b':'));
        }
        Ok(raw) => {
            assert!(!c.client_id.contains(&b':'));
            match basic::parse_readings(raw.as_bytes()) {
                Err(BasicError::EmptyId) => assert!(c.client_id.is_empty()),
                Ok(Some(r)) => {
                    // The raw reading is the credentials as given (the standard one when it cannot
                    // differ).
                    let raw_reading = match r.raw {
                        Some(raw) => raw,
                        None => r.standard.expect("no escapes: the standard reading exists"),
                    };
                    assert_eq!(&raw_reading, c, "raw round trip");
                }
                other => panic!("raw encoding {raw:?} reads as {other:?}"),
            }
        }
    }

    // Debug shows the id and never the secret.
    assert_eq!(
        format!("{c:?}"),
        format!(
            "Credentials {{ client_id: {:?}, secret: \"<redacted>\" }}",
            String::from_utf8_lossy(&c.client_id)
        )
    );
}
