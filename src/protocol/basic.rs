//! `client_secret_basic`: the `Authorization: Basic` header of RFC 6749 §2.3.1.
//!
//! RFC 6749 §2.3.1: "The client identifier is encoded using the application/x-www-form-urlencoded
//! encoding algorithm per Appendix B, and the encoded value is used as the username; the client
//! password is encoded using the same algorithm and used as the password." Then RFC 7617: base64 of
//! `username:password`. Many servers skip the form-encoding step and compare the raw strings; for
//! them an upstream can be set to [`BasicEncoding::Raw`].

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::Engine;

use super::form;
use super::secret::{SecretBytes, SecretString};

/// How `id:secret` is turned into the Basic credentials for an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BasicEncoding {
    /// RFC 6749 §2.3.1: form-urlencode id and secret, join with `:`, base64.
    #[default]
    Rfc6749,
    /// base64 of `id:secret` as is (RFC 7617 alone), for servers that compare without decoding.
    Raw,
}

/// Why a Basic header could not be used. The descriptions never include the header's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BasicError {
    #[error("the Basic credentials are not valid base64")]
    NotBase64,
    #[error("the Basic credentials have no ':' between client_id and secret")]
    NoColon,
    #[error("the Basic credentials contain a malformed percent-escape")]
    MalformedEscape,
    #[error("the client_id is empty")]
    EmptyId,
    #[error("a client_id containing ':' cannot be sent with raw Basic encoding")]
    ColonInRawId,
}

/// Client credentials: a client_id and a secret, as decoded bytes.
///
/// `Debug` never prints the secret; it is zeroized when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub client_id: Vec<u8>,
    pub secret: SecretBytes,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &String::from_utf8_lossy(&self.client_id))
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// What an `Authorization` header value holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// `Basic` (scheme matched case-insensitively, RFC 7235 §2.1), decoded per RFC 6749 §2.3.1.
    Basic(Credentials),
    /// Any other scheme (Bearer, DPoP, ...): not client authentication that this gateway converts.
    Other,
}

/// Accepts padded and unpadded base64, as clients send both.
const LENIENT_PADDING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Parses an `Authorization` header value. A `Basic` value is decoded per RFC 6749 §2.3.1: base64,
/// split at the first `:`, then each half form-urldecoded (strictly).
pub fn parse_authorization(value: &[u8]) -> Result<Authorization, BasicError> {
    Ok(match parse_readings(value)? {
        None => Authorization::Other,
        Some(r) => Authorization::Basic(r.standard?),
    })
}

/// The two ways a `Basic` value can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readings {
    /// RFC 6749 §2.3.1: each half form-urldecoded (fails on a malformed escape).
    pub standard: Result<Credentials, BasicError>,
    /// The halves as they are — what clients that skip the form-encoding (Python requests'
    /// `auth=`, some Spring Security and requests-oauthlib versions) mean. Only given when it can
    /// differ from the standard reading (the value holds a `%` or a `+`).
    pub raw: Option<Credentials>,
}

/// Reads a `Basic` value both ways (`None`: another scheme). Errors that leave no reading at all
/// (not base64, no `:`, an empty client_id) are errors.
pub fn parse_readings(value: &[u8]) -> Result<Option<Readings>, BasicError> {
    let value = value.trim_ascii();
    let (scheme, rest) = match value.iter().position(|&b| b == b' ') {
        Some(sp) => (&value[..sp], value[sp + 1..].trim_ascii()),
        None => (value, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return Ok(None);
    }
    let decoded = SecretBytes::from(
        LENIENT_PADDING
            .decode(rest)
            .map_err(|_| BasicError::NotBase64)?,
    );
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(BasicError::NoColon)?;
    let (id, secret) = (&decoded[..colon], &decoded[colon + 1..]);
    // Decoding never empties a non-empty id.
    if id.is_empty() {
        return Err(BasicError::EmptyId);
    }
    let standard = match (form::decode(id), form::decode(secret)) {
        (Ok(client_id), Ok(secret)) => Ok(Credentials {
            client_id: client_id.into_owned(),
            secret: secret.into_owned().into(),
        }),
        _ => Err(BasicError::MalformedEscape),
    };
    let raw = decoded
        .iter()
        .any(|&b| b == b'%' || b == b'+')
        .then(|| Credentials {
            client_id: id.to_vec(),
            secret: secret.into(),
        });
    Ok(Some(Readings { standard, raw }))
}

/// Builds the `Authorization` header value for `creds` in the given encoding.
pub fn encode(creds: &Credentials, encoding: BasicEncoding) -> Result<SecretString, BasicError> {
    let mut plain = Vec::with_capacity(3 * (creds.client_id.len() + creds.secret.len()) + 1);
    match encoding {
        BasicEncoding::Rfc6749 => {
            let mut s = SecretString::from(String::with_capacity(plain.capacity()));
            let text = s.as_mut_string();
            form::encode_into(&creds.client_id, text);
            text.push(':');
            form::encode_into(&creds.secret, text);
            plain.extend_from_slice(text.as_bytes());
        }
        BasicEncoding::Raw => {
            // RFC 7617 §2: a user-id containing a colon cannot be represented.
            if creds.client_id.contains(&b':') {
                return Err(BasicError::ColonInRawId);
            }
            plain.extend_from_slice(&creds.client_id);
            plain.push(b':');
            plain.extend_from_slice(&creds.secret);
        }
    }
    let plain = SecretBytes::from(plain);
    let mut out = SecretString::from(String::with_capacity(6 + plain.len().div_ceil(3) * 4));
    out.as_mut_string().push_str("Basic ");
    STANDARD.encode_string(&*plain, out.as_mut_string());
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_raw_reading_decodes_nothing_and_is_given_only_when_it_can_differ() {
        let b = |s: &str| format!("Basic {}", STANDARD.encode(s));
        let r = parse_readings(b("app:b: +%&=/ %41x").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(r.standard, Err(BasicError::MalformedEscape));
        assert_eq!(r.raw, Some(creds("app", "b: +%&=/ %41x")));
        let r = parse_readings(b("my%3Aapp:s+%2B").replacen("Basic", "basic", 1).as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(r.standard, Ok(creds("my:app", "s +")));
        assert_eq!(r.raw, Some(creds("my%3Aapp", "s+%2B")));
        let r = parse_readings(b("app:plain:secret").as_bytes())
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.standard, r.raw),
            (Ok(creds("app", "plain:secret")), None)
        );
        assert_eq!(parse_readings(b"Bearer abc"), Ok(None));
        assert_eq!(parse_readings(b"Basic !!!"), Err(BasicError::NotBase64));
        assert_eq!(parse_readings(b(":s").as_bytes()), Err(BasicError::EmptyId));
    }

    fn creds(id: &str, secret: &str) -> Credentials {
        Credentials {
            client_id: id.as_bytes().to_vec(),
            secret: secret.as_bytes().into(),
        }
    }

    fn basic(plain: &str) -> String {
        format!("Basic {}", STANDARD.encode(plain))
    }

    #[test]
    fn rfc6749_encoding_form_encodes_each_half_before_base64() {
        let got = encode(&creds("my:app", "s3:cr+t %&=/é%41"), BasicEncoding::Rfc6749).unwrap();
        assert_eq!(got, basic("my%3Aapp:s3%3Acr%2Bt+%25%26%3D%2F%C3%A9%2541"));
    }

    #[test]
    fn raw_encoding_base64s_the_bytes_as_is() {
        let got = encode(&creds("app", "a:b+c%41"), BasicEncoding::Raw).unwrap();
        assert_eq!(got, basic("app:a:b+c%41"));
    }

    #[test]
    fn raw_encoding_refuses_a_colon_in_the_client_id() {
        assert_eq!(
            encode(&creds("a:b", "x"), BasicEncoding::Raw),
            Err(BasicError::ColonInRawId)
        );
    }

    #[test]
    fn parse_decodes_rfc6749_and_splits_at_first_colon() {
        let v = basic("my%3Aapp:s3%3Acr%2Bt+%C3%A9");
        assert_eq!(
            parse_authorization(v.as_bytes()),
            Ok(Authorization::Basic(creds("my:app", "s3:cr+t é")))
        );
        // A raw secret with a colon still splits at the first one.
        assert_eq!(
            parse_authorization(basic("app:a:b").as_bytes()),
            Ok(Authorization::Basic(creds("app", "a:b")))
        );
    }

    #[test]
    fn scheme_is_case_insensitive_and_padding_optional() {
        let padded = STANDARD.encode("ab:c");
        assert_eq!(padded, "YWI6Yw==");
        for v in ["basic YWI6Yw==", "BASIC YWI6Yw", "Basic   YWI6Yw==  "] {
            assert_eq!(
                parse_authorization(v.as_bytes()),
                Ok(Authorization::Basic(creds("ab", "c"))),
                "{v}"
            );
        }
    }

    #[test]
    fn empty_secret_is_allowed_empty_id_is_not() {
        assert_eq!(
            parse_authorization(basic("app:").as_bytes()),
            Ok(Authorization::Basic(creds("app", "")))
        );
        assert_eq!(
            parse_authorization(basic(":secret").as_bytes()),
            Err(BasicError::EmptyId)
        );
    }

    #[test]
    fn malformed_basic_is_an_error() {
        assert_eq!(
            parse_authorization(b"Basic !!!"),
            Err(BasicError::NotBase64)
        );
        assert_eq!(parse_authorization(b"Basic"), Err(BasicError::NoColon));
        assert_eq!(
            parse_authorization(basic("nocolon").as_bytes()),
            Err(BasicError::NoColon)
        );
        assert_eq!(
            parse_authorization(basic("app:%zz").as_bytes()),
            Err(BasicError::MalformedEscape)
        );
    }

    #[test]
    fn other_schemes_are_not_basic() {
        assert_eq!(parse_authorization(b"Bearer abc"), Ok(Authorization::Other));
        assert_eq!(
            parse_authorization(b"Basically x"),
            Ok(Authorization::Other)
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let shown = format!("{:?}", creds("app", "hunter2"));
        assert!(shown.contains("app") && !shown.contains("hunter2"));
    }

    proptest! {
        /// RFC 6749 §2.3.1 encoder and decoder are inverse for any Unicode id and secret.
        #[test]
        fn rfc6749_round_trip(
            id in "(\\PC|[:+%&=/ é]|%41){1,24}",
            secret in "(\\PC|[:+%&=/ é]|%41){0,48}",
        ) {
            let c = creds(&id, &secret);
            let header = encode(&c, BasicEncoding::Rfc6749).unwrap();
            prop_assert_eq!(parse_authorization(header.as_bytes()), Ok(Authorization::Basic(c)));
        }

        #[test]
        fn rfc6749_round_trip_bytes(id in proptest::collection::vec(any::<u8>(), 1..24),
                                    secret in proptest::collection::vec(any::<u8>(), 0..48)) {
            let c = Credentials { client_id: id, secret: secret.into() };
            let header = encode(&c, BasicEncoding::Rfc6749).unwrap();
            prop_assert_eq!(parse_authorization(header.as_bytes()), Ok(Authorization::Basic(c)));
        }

        #[test]
        fn parse_never_panics(v in any::<Vec<u8>>()) {
            let _ = parse_authorization(&v);
        }
    }
}
