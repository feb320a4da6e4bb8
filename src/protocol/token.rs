//! The token-request decision: from a request's head and body to either the exact request to
//! forward or the error to answer. Pure: bytes in, decision out.
//!
//! Rules, each with the section that asks for it:
//! - RFC 6749 §3.2: token requests are `POST`, parameters in an
//!   `application/x-www-form-urlencoded` body.
//! - RFC 6749 §2.3.1: credentials MUST NOT be in the request URI.
//! - RFC 6749 §3.1: parameters MUST NOT appear twice (enforced for the credential parameters; others,
//!   such as RFC 8707's `resource`, may legitimately repeat and pass untouched).
//! - RFC 6749 §2.3: a client MUST NOT use more than one authentication method in a request.
//! - RFC 6749 §2.3.1: Basic credentials are form-urlencoded before base64.

use super::basic::{self, Authorization, BasicEncoding, BasicError, Credentials};
use super::endpoint::Endpoint;
use super::error::OAuthError;
use super::form;
use super::method::{Conversion, MethodSeen};
use super::secret::{SecretBytes, SecretString};

/// What happens to the `Authorization` header on the way upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderChange {
    Keep,
    Remove,
    /// A new value (credentials: redacted in `Debug`, zeroized when dropped).
    Set(SecretString),
}

/// The request to forward: only what differs from what the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub method_seen: MethodSeen,
    pub authorization: HeaderChange,
    /// The new body, or `None` to forward the received body unchanged (it may carry the
    /// secret: redacted in `Debug`, zeroized when dropped).
    pub body: Option<SecretBytes>,
}

impl Forward {
    /// Whether the gateway changed the client authentication.
    pub fn converted(&self) -> bool {
        self.authorization != HeaderChange::Keep || self.body.is_some()
    }
}

/// Limits that apply before the body is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit {
    pub max_bytes: usize,
}

const FORM_CONTENT_TYPE: &[u8] = b"application/x-www-form-urlencoded";

/// The request line and header facts checked before any body byte is read.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub method: &'a [u8],
    pub content_type: Option<&'a [u8]>,
    pub query: Option<&'a [u8]>,
    pub content_length: Option<u64>,
}

/// RFC 6749 §3.2 and §2.3.1 checks on the head, and the body cap when the length is declared.
pub fn check_head(head: &Head<'_>, limit: BodyLimit) -> Result<(), OAuthError> {
    if head.method != b"POST" {
        let mut e = OAuthError::new(
            405,
            super::error::ErrorCode::InvalidRequest,
            "the token endpoint accepts only POST",
        );
        e.allow = Some("POST");
        return Err(e);
    }
    if !is_form_content_type(head.content_type) {
        return Err(OAuthError::invalid_request(
            "the request body must be application/x-www-form-urlencoded",
        ));
    }
    if let Some(query) = head.query {
        check_query(query)?;
    }
    if head
        .content_length
        .is_some_and(|n| n > limit.max_bytes as u64)
    {
        return Err(too_large());
    }
    Ok(())
}

/// Nominations a `Connection` header may carry at most (as Pingora's proxy path allows).
const MAX_NOMINATIONS: usize = 10;

/// RFC 9110 §7.6.1: `Connection` names the fields this hop removes. A token request may not name
/// one the gateway frames, authenticates with or sets itself (`Host`, `Content-Length`,
/// `Transfer-Encoding`, `Authorization`, `Forwarded`, `X-Real-IP`, any `X-Forwarded-*`), a name
/// that is no token (§5.6.2), or more than ten. `values`: every `Connection` value sent.
pub fn check_connection<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Result<(), OAuthError> {
    let refused = |why| Err(OAuthError::invalid_request(why).closing());
    let mut count = 0;
    for value in values {
        for name in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if name.is_empty() {
                continue;
            }
            count += 1;
            if count > MAX_NOMINATIONS {
                return refused("the Connection header nominates too many fields");
            }
            if !name.iter().all(|&b| is_tchar(b)) {
                return refused("the Connection header nominates an invalid field name");
            }
            let protected = [
                "host",
                "content-length",
                "transfer-encoding",
                "authorization",
            ]
            .iter()
            .chain(&["forwarded", "x-real-ip"])
            .any(|p| name.eq_ignore_ascii_case(p.as_bytes()))
                || name
                    .get(..12)
                    .is_some_and(|p| p.eq_ignore_ascii_case(b"x-forwarded-"));
            if protected {
                return refused(
                    "the Connection header nominates a field the gateway does not remove",
                );
            }
        }
    }
    Ok(())
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The 413 answer for a body over the cap.
pub fn too_large() -> OAuthError {
    OAuthError::new(
        413,
        super::error::ErrorCode::InvalidRequest,
        "the request body is larger than this endpoint accepts",
    )
}

/// `application/x-www-form-urlencoded`, any case, parameters (such as `charset`) allowed.
pub fn is_form_content_type(value: Option<&[u8]>) -> bool {
    let Some(value) = value else { return false };
    let media_type = value.split(|&b| b == b';').next().unwrap_or_default();
    media_type
        .trim_ascii()
        .eq_ignore_ascii_case(FORM_CONTENT_TYPE)
}

/// Names that carry client authentication in a form body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // named for the parameters they stand for
enum CredParam {
    ClientId,
    ClientSecret,
    ClientAssertion,
    ClientAssertionType,
    /// Not a credential, but validation needs it and RFC 6749 §3.1 forbids repeating it.
    GrantType,
}

impl CredParam {
    fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"client_id" => Some(CredParam::ClientId),
            b"client_secret" => Some(CredParam::ClientSecret),
            b"client_assertion" => Some(CredParam::ClientAssertion),
            b"client_assertion_type" => Some(CredParam::ClientAssertionType),
            b"grant_type" => Some(CredParam::GrantType),
            _ => None,
        }
    }

    fn repeated(self) -> OAuthError {
        OAuthError::invalid_request(match self {
            CredParam::ClientId => "parameter client_id appears more than once",
            CredParam::ClientSecret => "parameter client_secret appears more than once",
            CredParam::ClientAssertion => "parameter client_assertion appears more than once",
            CredParam::ClientAssertionType => {
                "parameter client_assertion_type appears more than once"
            }
            CredParam::GrantType => "parameter grant_type appears more than once",
        })
    }
}

const MALFORMED_BODY: &str = "the request body contains a malformed percent-escape";

fn check_query(query: &[u8]) -> Result<(), OAuthError> {
    for pair in form::pieces(query) {
        let name = form::decode(pair.name).map_err(|_| {
            OAuthError::invalid_request("the query string contains a malformed percent-escape")
        })?;
        if CredParam::from_name(&name).is_some() {
            return Err(OAuthError::invalid_request(
                "client credentials must not be sent in the query string",
            ));
        }
    }
    Ok(())
}

/// Whether a query string carries client secrets (`client_secret`, `client_assertion`,
/// `client_assertion_type`; a bare `client_id`, as in an authorization request, does not count).
/// RFC 6749 §2.3.1: credentials never go in the request URI; the gateway refuses such requests on
/// every route towards a server that hosts a token endpoint. Names are form-decoded; a name whose
/// escape is malformed reads as no parameter (no server decodes it to one either).
pub fn query_carries_secrets(query: &[u8]) -> bool {
    form::pieces(query).any(|pair| {
        form::decode(pair.name).is_ok_and(|name| {
            matches!(
                CredParam::from_name(&name),
                Some(
                    CredParam::ClientSecret
                        | CredParam::ClientAssertion
                        | CredParam::ClientAssertionType
                )
            )
        })
    })
}

/// The credential parameters found in a body: piece index and decoded value.
#[derive(Default)]
struct BodyCredentials {
    client_id: Option<(usize, Vec<u8>)>,
    client_secret: Option<(usize, SecretBytes)>,
    assertion: bool,
    grant_type: Option<Vec<u8>>,
}

fn scan_body(body: &[u8]) -> Result<BodyCredentials, OAuthError> {
    let mut found = BodyCredentials::default();
    let mut assertion_type = false;
    for (i, pair) in form::pieces(body).enumerate() {
        let name =
            form::decode(pair.name).map_err(|_| OAuthError::invalid_request(MALFORMED_BODY))?;
        let Some(param) = CredParam::from_name(&name) else {
            form::validate(pair.value).map_err(|_| OAuthError::invalid_request(MALFORMED_BODY))?;
            continue;
        };
        let value = form::decode(pair.value)
            .map_err(|_| OAuthError::invalid_request(MALFORMED_BODY))?
            .into_owned();
        let slot_taken = match param {
            CredParam::ClientId => found.client_id.replace((i, value)).is_some(),
            CredParam::ClientSecret => found.client_secret.replace((i, value.into())).is_some(),
            CredParam::ClientAssertion => std::mem::replace(&mut found.assertion, true),
            CredParam::ClientAssertionType => std::mem::replace(&mut assertion_type, true),
            CredParam::GrantType => found.grant_type.replace(value).is_some(),
        };
        if slot_taken {
            return Err(param.repeated());
        }
    }
    Ok(found)
}

fn basic_error(e: BasicError) -> OAuthError {
    OAuthError::invalid_client(
        match e {
            BasicError::NotBase64 => "malformed Basic credentials: not valid base64",
            BasicError::NoColon => "malformed Basic credentials: no ':' separator",
            BasicError::MalformedEscape => {
                "malformed Basic credentials: malformed percent-escape (RFC 6749 section 2.3.1)"
            }
            BasicError::EmptyId => "malformed Basic credentials: empty client_id",
            BasicError::ColonInRawId => {
                "this client_id contains ':' and cannot be sent to the authorization server"
            }
        },
        true,
    )
}

const TWO_METHODS: &str = "the client used more than one authentication method";

/// The client authentication of a token request, checked against RFC 6749 §2.3 and §3.1.
pub struct Extracted {
    header: Option<Authorization>,
    found: BodyCredentials,
    reading: BasicReading,
}

/// Which reading of Basic credentials is the client's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// RFC 6749 §2.3.1: id and secret form-decoded (and anything that is not Basic).
    Standard,
    /// As sent, without form-decoding: a client that skipped RFC 6749's encoding.
    Raw,
}

/// How Basic credentials read. RFC 6749 §2.3.1 form-decoding is the standard; clients that skip
/// the encoding send the raw `id:secret`. Where the two readings differ, only the client's record
/// can tell which one was meant, so a validating route may try the raw one (see
/// [`Extracted::raw_alternative`]); a converting route cannot tell and keeps the standard.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BasicReading {
    /// The standard reading (or no Basic at all).
    Standard,
    /// The standard reading, and the secret of a different raw reading of the same client_id.
    Ambiguous(SecretBytes),
    /// Only the raw reading exists (form-decoding failed); the header holds it.
    RawOnly,
    /// Validation found the raw reading to be the client's; the header holds it.
    RawVerified,
}

/// Never prints credentials.
impl std::fmt::Debug for Extracted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extracted")
            .field("method_seen", &self.method_seen())
            .finish_non_exhaustive()
    }
}

/// Finds and checks the client authentication of a token request whose head passed
/// [`check_head`]. `authorization` holds every `Authorization` header value the client sent.
pub fn extract(authorization: &[&[u8]], body: &[u8]) -> Result<Extracted, OAuthError> {
    let (header, reading) = match authorization {
        [] => (None, BasicReading::Standard),
        [one] => match basic::parse_readings(one).map_err(basic_error)? {
            None => (Some(Authorization::Other), BasicReading::Standard),
            Some(basic::Readings {
                standard: Ok(standard),
                raw,
            }) => {
                let reading = match raw {
                    Some(raw) if raw != standard && raw.client_id == standard.client_id => {
                        BasicReading::Ambiguous(raw.secret)
                    }
                    _ => BasicReading::Standard,
                };
                (Some(Authorization::Basic(standard)), reading)
            }
            Some(basic::Readings {
                standard: Err(e),
                raw,
            }) => match raw {
                Some(raw) => (Some(Authorization::Basic(raw)), BasicReading::RawOnly),
                None => return Err(basic_error(e)),
            },
        },
        _ => {
            return Err(OAuthError::invalid_request(
                "more than one Authorization header",
            ))
        }
    };
    let found = scan_body(body)?;

    if found
        .client_id
        .as_ref()
        .is_some_and(|(_, id)| id.is_empty())
    {
        return Err(OAuthError::invalid_request("client_id is empty"));
    }
    // RFC 6749 §2.3: one method per request.
    let body_secret_or_assertion = found.client_secret.is_some() || found.assertion;
    if (header.is_some() && body_secret_or_assertion)
        || (found.client_secret.is_some() && found.assertion)
    {
        return Err(OAuthError::invalid_request(TWO_METHODS));
    }
    if found.client_secret.is_some() && found.client_id.is_none() {
        return Err(OAuthError::invalid_request(
            "client_secret was sent without client_id",
        ));
    }
    if let (Some(Authorization::Basic(creds)), Some((_, id))) = (&header, &found.client_id) {
        if *id != creds.client_id {
            return Err(OAuthError::invalid_request(
                "client_id in the body does not match the Basic credentials",
            ));
        }
    }
    Ok(Extracted {
        header,
        found,
        reading,
    })
}

impl Extracted {
    /// The client authentication method the request used.
    pub fn method_seen(&self) -> MethodSeen {
        match (&self.header, &self.found) {
            (Some(Authorization::Basic(_)), _) => MethodSeen::BASIC,
            (Some(Authorization::Other), _) => MethodSeen::OtherScheme,
            (None, f) if f.client_secret.is_some() => MethodSeen::POST,
            (None, f) if f.assertion => MethodSeen::ClientAssertion,
            (None, f) if f.client_id.is_some() => MethodSeen::PUBLIC,
            (None, _) => MethodSeen::NoneFound,
        }
    }

    /// The client identifier, from the Basic user or the body.
    pub fn client_id(&self) -> Option<&[u8]> {
        match &self.header {
            Some(Authorization::Basic(c)) => Some(&c.client_id),
            _ => self.found.client_id.as_ref().map(|(_, id)| id.as_slice()),
        }
    }

    /// The secret presented with Basic or `client_secret_post`.
    pub fn secret(&self) -> Option<&[u8]> {
        match &self.header {
            Some(Authorization::Basic(c)) => Some(&c.secret),
            _ => self.found.client_secret.as_ref().map(|(_, s)| &**s),
        }
    }

    /// The decoded `grant_type`, if any.
    pub fn grant_type(&self) -> Option<&[u8]> {
        self.found.grant_type.as_deref()
    }

    /// The raw reading of the Basic credentials (same client_id, another secret), when it differs
    /// from the standard one: for a validating route to try when the standard one fails.
    pub fn raw_alternative(&self) -> Option<&[u8]> {
        match &self.reading {
            BasicReading::Ambiguous(secret) => Some(secret),
            _ => None,
        }
    }

    /// Whether the Basic credentials have only the raw reading ([`Extracted::secret`] is it):
    /// form-decoding them failed. A converting route refuses them; a validating route accepts
    /// them when they verify.
    pub fn raw_only(&self) -> bool {
        self.reading == BasicReading::RawOnly
    }

    /// The credentials read as `reading`: [`Reading::Raw`] takes the raw reading as the client's
    /// credentials, once the client's record confirmed it; they are then forwarded as the client
    /// meant them (re-encoded per RFC 6749 for Basic). Where no raw reading exists, nothing
    /// changes.
    pub fn with_reading(mut self, reading: Reading) -> Extracted {
        if reading == Reading::Standard {
            return self;
        }
        match std::mem::replace(&mut self.reading, BasicReading::RawVerified) {
            BasicReading::Ambiguous(secret) => {
                if let Some(Authorization::Basic(creds)) = &mut self.header {
                    creds.secret = secret;
                }
            }
            BasicReading::RawOnly | BasicReading::RawVerified => {}
            BasicReading::Standard => self.reading = BasicReading::Standard,
        }
        self
    }

    /// Whether the client tried Basic (a 401 then carries `WWW-Authenticate: Basic`).
    pub fn tried_basic(&self) -> bool {
        matches!(self.header, Some(Authorization::Basic(_)))
    }

    /// What to forward: the request converted to `conversion`, or unchanged for `None`.
    pub fn convert(
        self,
        conversion: Option<Conversion>,
        encoding: BasicEncoding,
        endpoint: Endpoint,
        authorization: &[&[u8]],
        body: &[u8],
    ) -> Result<Forward, OAuthError> {
        let method_seen = self.method_seen();
        if self.reading == BasicReading::RawOnly {
            // Unverified and not RFC 6749 encoded: nothing tells what the client meant.
            return Err(basic_error(BasicError::MalformedEscape));
        }
        let Some(conversion) = conversion else {
            return Ok(unchanged(method_seen));
        };
        let found = self.found;
        let reencode = self.reading == BasicReading::RawVerified;
        match self.header {
            Some(Authorization::Basic(creds)) => basic_to(
                conversion,
                encoding,
                creds,
                &found,
                authorization,
                body,
                reencode,
            ),
            _ => match (found.client_id, found.client_secret) {
                (Some((id_at, client_id)), Some((secret_at, secret))) => {
                    let creds = Credentials { client_id, secret };
                    // PAR's client_id is also an authorization request parameter: it stays.
                    let moved: &[usize] = if endpoint.client_id_is_a_request_parameter() {
                        &[secret_at]
                    } else {
                        &[id_at, secret_at]
                    };
                    post_to(conversion, encoding, creds, moved, body)
                }
                _ => Ok(unchanged(method_seen)),
            },
        }
    }
}

/// `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

impl Extracted {
    /// What to forward to a server that takes a JWT client assertion (RFC 7523 §2.2) in place of
    /// the secret: the `Authorization` header or the `client_secret` parameter gone, `client_id`
    /// and `client_assertion_type` in the body, every other byte kept. The `client_assertion`
    /// itself is appended when the request is sent (a new one for every attempt). A request
    /// without a secret cannot be upgraded.
    pub fn to_assertion(self, body: &[u8]) -> Result<Forward, OAuthError> {
        if self.reading == BasicReading::RawOnly {
            return Err(basic_error(BasicError::MalformedEscape));
        }
        let found = self.found;
        let (method_seen, authorization, mut new_body) = match self.header {
            Some(Authorization::Basic(creds)) => (
                MethodSeen::BASIC,
                HeaderChange::Remove,
                with_client_id_last(body, &found, &creds.client_id),
            ),
            _ => match (&found.client_id, &found.client_secret) {
                (Some(_), Some((secret_at, _))) => (
                    MethodSeen::POST,
                    HeaderChange::Keep,
                    without_pieces(body, &[*secret_at]),
                ),
                _ => {
                    return Err(OAuthError::invalid_client(
                        "client authentication is required",
                        false,
                    ))
                }
            },
        };
        append_param(
            &mut new_body,
            b"client_assertion_type",
            JWT_BEARER.as_bytes(),
        );
        Ok(Forward {
            method_seen,
            authorization,
            body: Some(new_body.into()),
        })
    }
}

/// Decides what to forward for a token request whose head passed [`check_head`]: [`extract`],
/// then convert.
pub fn decide(
    authorization: &[&[u8]],
    body: &[u8],
    conversion: Conversion,
    encoding: BasicEncoding,
) -> Result<Forward, OAuthError> {
    extract(authorization, body)?.convert(
        Some(conversion),
        encoding,
        Endpoint::Token,
        authorization,
        body,
    )
}

fn unchanged(method_seen: MethodSeen) -> Forward {
    Forward {
        method_seen,
        authorization: HeaderChange::Keep,
        body: None,
    }
}

/// The client sent Basic.
fn basic_to(
    conversion: Conversion,
    encoding: BasicEncoding,
    creds: Credentials,
    found: &BodyCredentials,
    raw_header: &[&[u8]],
    body: &[u8],
    reencode: bool,
) -> Result<Forward, OAuthError> {
    match conversion {
        Conversion::ToBasic => {
            let authorization = match encoding {
                // Credentials the client sent raw: encoded as RFC 6749 says.
                BasicEncoding::Rfc6749 if reencode => {
                    HeaderChange::Set(basic::encode(&creds, encoding).map_err(basic_error)?)
                }
                // Already the upstream's method and encoding: forward the header untouched.
                BasicEncoding::Rfc6749 => HeaderChange::Keep,
                // Re-encode for a server that compares without decoding, unless that is a no-op.
                BasicEncoding::Raw => {
                    let raw = basic::encode(&creds, BasicEncoding::Raw).map_err(basic_error)?;
                    if raw_header.first().map(|h| h.trim_ascii()) == Some(raw.as_bytes()) {
                        HeaderChange::Keep
                    } else {
                        HeaderChange::Set(raw)
                    }
                }
            };
            Ok(Forward {
                method_seen: MethodSeen::BASIC,
                authorization,
                body: None,
            })
        }
        Conversion::ToPost => {
            let mut new_body = with_client_id_last(body, found, &creds.client_id);
            append_param(&mut new_body, b"client_secret", &creds.secret);
            Ok(Forward {
                method_seen: MethodSeen::BASIC,
                authorization: HeaderChange::Remove,
                body: Some(new_body.into()),
            })
        }
    }
}

/// The client sent `client_secret_post`.
fn post_to(
    conversion: Conversion,
    encoding: BasicEncoding,
    creds: Credentials,
    pieces_at: &[usize],
    body: &[u8],
) -> Result<Forward, OAuthError> {
    match conversion {
        Conversion::ToPost => Ok(unchanged(MethodSeen::POST)),
        Conversion::ToBasic => {
            let header = basic::encode(&creds, encoding).map_err(|e| {
                let mut err = basic_error(e);
                err.www_authenticate = false;
                err
            })?;
            Ok(Forward {
                method_seen: MethodSeen::POST,
                authorization: HeaderChange::Set(header),
                body: Some(without_pieces(body, pieces_at).into()),
            })
        }
    }
}

/// The body of a Basic request with the client's id moved into it: a body `client_id` (equal to
/// the Basic one, checked by `extract`) dropped, `client_id` appended; every other byte kept.
fn with_client_id_last(body: &[u8], found: &BodyCredentials, client_id: &[u8]) -> Vec<u8> {
    let drop: Vec<usize> = found.client_id.iter().map(|(i, _)| *i).collect();
    let mut out = without_pieces(body, &drop);
    append_param(&mut out, b"client_id", client_id);
    out
}

/// The body with the given `&`-pieces removed; every other byte kept, in order.
fn without_pieces(body: &[u8], drop: &[usize]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut first = true;
    for (i, pair) in form::pieces(body).enumerate() {
        if drop.contains(&i) {
            continue;
        }
        if !first {
            out.push(b'&');
        }
        out.extend_from_slice(pair.raw);
        first = false;
    }
    out
}

fn append_param(body: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    if !body.is_empty() {
        body.push(b'&');
    }
    body.extend_from_slice(name);
    body.push(b'=');
    body.extend_from_slice(form::encode(value).as_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_header_may_not_nominate_what_the_gateway_frames_or_sets() {
        let check = |v: &str| check_connection([v.as_bytes()]);
        for ok in ["keep-alive", "close", "keep-alive, X-Hop", " , TE", ""] {
            assert!(check(ok).is_ok(), "{ok}");
        }
        for bad in [
            "keep-alive, X-Forwarded-For",
            "x-forwarded-proto",
            "X-FORWARDED-HOST",
            "Host",
            "content-length",
            "Transfer-Encoding",
            "authorization",
            "Forwarded",
            "x-real-ip",
            "\"x-forwarded-for\"",
            "a b",
            "a,b,c,d,e,f,g,h,i,j,k",
        ] {
            let e = check(bad).unwrap_err();
            assert_eq!((e.status, e.close), (400, true), "{bad}");
        }
        // Nominations add up over several Connection lines.
        let many = ["a,b,c,d,e".as_bytes(), b"f,g,h,i,j", b"k"];
        assert!(check_connection(many).is_err());
    }
    use crate::protocol::error::ErrorCode;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use proptest::prelude::*;

    const LIMIT: BodyLimit = BodyLimit { max_bytes: 16 };
    const RFC: BasicEncoding = BasicEncoding::Rfc6749;

    fn head<'a>(method: &'a str, ct: Option<&'a str>, query: Option<&'a str>) -> Head<'a> {
        Head {
            method: method.as_bytes(),
            content_type: ct.map(str::as_bytes),
            query: query.map(str::as_bytes),
            content_length: Some(10),
        }
    }

    fn basic(plain: &str) -> String {
        format!("Basic {}", STANDARD.encode(plain))
    }

    fn to_basic(body: &str) -> Result<Forward, OAuthError> {
        decide(&[], body.as_bytes(), Conversion::ToBasic, RFC)
    }

    fn err_of(r: Result<Forward, OAuthError>) -> OAuthError {
        r.expect_err("expected a rejection")
    }

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");

    fn basic_of(plain: &str) -> String {
        format!("Basic {}", STANDARD.encode(plain))
    }

    #[test]
    fn raw_basic_is_an_alternative_reading_taken_only_when_accepted() {
        let h = basic_of("app:s+%41");
        let auth = [h.as_bytes()];
        let body = b"grant_type=client_credentials";
        let x = extract(&auth, body).unwrap();
        assert_eq!(x.secret(), Some(&b"s A"[..]));
        assert_eq!(x.raw_alternative(), Some(&b"s+%41"[..]));
        assert!(!x.raw_only());
        // Not accepted: converted in the standard reading, the header kept as sent.
        let f = x
            .convert(Some(Conversion::ToBasic), RFC, Endpoint::Token, &auth, body)
            .unwrap();
        assert_eq!(f.authorization, HeaderChange::Keep);
        // Accepted: the raw reading, re-encoded per RFC 6749 or sent as a form field.
        let x = extract(&auth, body).unwrap().with_reading(Reading::Raw);
        assert_eq!(x.secret(), Some(&b"s+%41"[..]));
        assert_eq!(x.raw_alternative(), None);
        let f = x
            .convert(Some(Conversion::ToBasic), RFC, Endpoint::Token, &auth, body)
            .unwrap();
        assert_eq!(
            f.authorization,
            HeaderChange::Set(basic_of("app:s%2B%2541").into())
        );
        let x = extract(&auth, body).unwrap().with_reading(Reading::Raw);
        let f = x
            .convert(Some(Conversion::ToPost), RFC, Endpoint::Token, &auth, body)
            .unwrap();
        assert_eq!(
            f.body.as_deref(),
            Some(&b"grant_type=client_credentials&client_id=app&client_secret=s%2B%2541"[..])
        );
    }

    #[test]
    fn basic_that_only_reads_raw_is_refused_unless_accepted() {
        let h = basic_of("app:b: +%&=/ %41x");
        let auth = [h.as_bytes()];
        let x = extract(&auth, b"").unwrap();
        assert!(x.raw_only());
        assert_eq!(x.secret(), Some(&b"b: +%&=/ %41x"[..]));
        assert_eq!(x.method_seen(), MethodSeen::BASIC);
        let e = x
            .convert(Some(Conversion::ToPost), RFC, Endpoint::Token, &auth, b"")
            .unwrap_err();
        assert_eq!((e.status, e.code), (401, ErrorCode::InvalidClient));
        let x = extract(&auth, b"").unwrap().with_reading(Reading::Raw);
        let f = x
            .convert(Some(Conversion::ToPost), RFC, Endpoint::Token, &auth, b"")
            .unwrap();
        assert_eq!(
            f.body.as_deref(),
            Some(&b"client_id=app&client_secret=b%3A+%2B%25%26%3D%2F+%2541x"[..])
        );
        // Still one method per request.
        let e = extract(&auth, b"client_secret=x").unwrap_err();
        assert_eq!((e.status, e.code), (400, ErrorCode::InvalidRequest));
    }

    #[test]
    fn no_alternative_when_the_readings_agree_or_name_other_clients() {
        for plain in ["app:plain-secret", "my%3Aapp:s%2B"] {
            let h = basic_of(plain);
            let x = extract(&[h.as_bytes()], b"").unwrap();
            assert_eq!(x.raw_alternative(), None, "{plain}");
            assert!(!x.raw_only());
        }
    }

    #[test]
    fn par_keeps_its_client_id_when_the_secret_moves_to_basic() {
        let body = b"response_type=code&client_id=app&client_secret=s%2B&scope=openid";
        let f = extract(&[], body)
            .unwrap()
            .convert(Some(Conversion::ToBasic), RFC, Endpoint::Par, &[], body)
            .unwrap();
        assert_eq!(
            f.body.as_deref(),
            Some(&b"response_type=code&client_id=app&scope=openid"[..])
        );
        assert_eq!(
            f.authorization,
            HeaderChange::Set(format!("Basic {}", STANDARD.encode("app:s%2B")).into())
        );
        // Basic → post: the client_id already in the body is not added twice.
        let auth = format!("Basic {}", STANDARD.encode("app:s"));
        let auth = [auth.as_bytes()];
        let body = b"response_type=code&client_id=app";
        let f = extract(&auth, body)
            .unwrap()
            .convert(Some(Conversion::ToPost), RFC, Endpoint::Par, &auth, body)
            .unwrap();
        assert_eq!(
            f.body.as_deref(),
            Some(&b"response_type=code&client_id=app&client_secret=s"[..])
        );
    }

    #[test]
    fn only_post_is_allowed_and_405_names_it() {
        let e = check_head(&head("GET", FORM, None), LIMIT).unwrap_err();
        assert_eq!((e.status, e.allow), (405, Some("POST")));
        assert!(check_head(&head("POST", FORM, None), LIMIT).is_ok());
        assert!(check_head(&head("post", FORM, None), LIMIT).is_err());
    }

    #[test]
    fn content_type_must_be_form_any_case_with_parameters() {
        for ok in [
            "application/x-www-form-urlencoded",
            "Application/X-WWW-Form-URLEncoded",
            "application/x-www-form-urlencoded; charset=UTF-8",
            " application/x-www-form-urlencoded ;charset=ISO-8859-1",
        ] {
            assert!(
                check_head(&head("POST", Some(ok), None), LIMIT).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            None,
            Some("application/json"),
            Some("multipart/form-data"),
            Some(""),
        ] {
            let e = check_head(&head("POST", bad, None), LIMIT).unwrap_err();
            assert_eq!(
                (e.status, e.code),
                (400, ErrorCode::InvalidRequest),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn credentials_in_query_string_are_rejected() {
        for q in [
            "client_secret=x",
            "a=1&client_id=x",
            "client%5Fsecret=x",
            "client_assertion=j",
        ] {
            let e = check_head(&head("POST", FORM, Some(q)), LIMIT).unwrap_err();
            assert_eq!(e.status, 400, "{q}");
            assert!(e.description.contains("query string"));
        }
        assert!(check_head(&head("POST", FORM, Some("foo=bar")), LIMIT).is_ok());
    }

    #[test]
    fn declared_length_over_cap_is_413() {
        let mut h = head("POST", FORM, None);
        h.content_length = Some(17);
        assert_eq!(check_head(&h, LIMIT).unwrap_err().status, 413);
        h.content_length = Some(16);
        assert!(check_head(&h, LIMIT).is_ok());
    }

    #[test]
    fn post_to_basic_removes_only_the_credentials_and_keeps_order() {
        let body = "grant_type=authorization_code&client_id=app&code=a%2Bb&client_secret=s%3Ds&redirect_uri=http://x/cb";
        let f = to_basic(body).unwrap();
        assert_eq!(f.method_seen, MethodSeen::POST);
        assert_eq!(
            f.authorization,
            HeaderChange::Set(basic("app:s%3Ds").into())
        );
        assert_eq!(
            f.body.as_deref(),
            Some(&b"grant_type=authorization_code&code=a%2Bb&redirect_uri=http://x/cb"[..])
        );
        assert!(f.converted());
    }

    #[test]
    fn post_to_basic_re_encodes_tricky_secrets_per_rfc6749() {
        // client_secret decoded from the body is ": + % & = / space é %41"
        let body = "client_id=my%3Aapp&client_secret=%3A+%2B+%25+%26+%3D+%2F+%C3%A9+%2541&grant_type=client_credentials";
        let f = to_basic(body).unwrap();
        assert_eq!(
            f.authorization,
            HeaderChange::Set(basic("my%3Aapp:%3A+%2B+%25+%26+%3D+%2F+%C3%A9+%2541").into())
        );
        assert_eq!(
            f.body.as_deref(),
            Some(&b"grant_type=client_credentials"[..])
        );
    }

    #[test]
    fn post_to_basic_raw_encoding_sends_bytes_as_is() {
        let body = "client_id=app&client_secret=a%2Bb%2541";
        let f = decide(
            &[],
            body.as_bytes(),
            Conversion::ToBasic,
            BasicEncoding::Raw,
        )
        .unwrap();
        assert_eq!(
            f.authorization,
            HeaderChange::Set(basic("app:a+b%41").into())
        );
    }

    #[test]
    fn raw_encoding_refuses_a_client_id_with_a_colon() {
        let body = b"client_id=a%3Ab&client_secret=x";
        let e = decide(&[], body, Conversion::ToBasic, BasicEncoding::Raw).unwrap_err();
        assert_eq!((e.status, e.www_authenticate), (401, false));
    }

    #[test]
    fn encoded_parameter_names_are_recognised() {
        let f = to_basic("client%5Fid=app&client_secre%74=s").unwrap();
        assert_eq!(f.authorization, HeaderChange::Set(basic("app:s").into()));
        assert_eq!(f.body.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn empty_secret_converts_missing_secret_is_a_public_client() {
        let f = to_basic("client_id=app&client_secret=&grant_type=x").unwrap();
        assert_eq!(f.authorization, HeaderChange::Set(basic("app:").into()));
        let f = to_basic("client_id=app&grant_type=x").unwrap();
        assert_eq!((f.method_seen, f.converted()), (MethodSeen::PUBLIC, false));
    }

    #[test]
    fn no_credentials_at_all_pass_unchanged() {
        let f = to_basic("grant_type=client_credentials").unwrap();
        assert_eq!(
            (f.method_seen, f.converted()),
            (MethodSeen::NoneFound, false)
        );
    }

    #[test]
    fn secret_without_client_id_is_invalid_request() {
        let e = err_of(to_basic("client_secret=s"));
        assert_eq!((e.status, e.code), (400, ErrorCode::InvalidRequest));
    }

    #[test]
    fn extract_reports_who_and_how() {
        let x = extract(
            &[],
            b"grant_type=client_credentials&client_id=a%3Ab&client_secret=s+1",
        )
        .unwrap();
        assert_eq!(x.method_seen(), MethodSeen::POST);
        assert_eq!(x.client_id(), Some(&b"a:b"[..]));
        assert_eq!(x.secret(), Some(&b"s 1"[..]));
        assert_eq!(x.grant_type(), Some(&b"client_credentials"[..]));
        assert!(!x.tried_basic());
        assert!(!format!("{x:?}").contains("s 1"));

        let h = basic("app:pw");
        let x = extract(&[h.as_bytes()], b"grant_type=x").unwrap();
        assert_eq!(
            (x.method_seen(), x.client_id(), x.secret()),
            (MethodSeen::BASIC, Some(&b"app"[..]), Some(&b"pw"[..]))
        );
        assert!(x.tried_basic());

        let x = extract(&[], b"client_id=spa&code=c").unwrap();
        assert_eq!((x.method_seen(), x.secret()), (MethodSeen::PUBLIC, None));
    }

    #[test]
    fn convert_without_a_conversion_forwards_unchanged() {
        let body = b"client_id=a&client_secret=s";
        let f = extract(&[], body)
            .unwrap()
            .convert(None, RFC, Endpoint::Token, &[], body)
            .unwrap();
        assert_eq!((f.method_seen, f.converted()), (MethodSeen::POST, false));
    }

    #[test]
    fn grant_type_twice_is_invalid_request() {
        let e = err_of(to_basic("grant_type=a&grant_type=b"));
        assert_eq!(e.description, "parameter grant_type appears more than once");
    }

    #[test]
    fn empty_client_id_is_invalid_request() {
        for body in ["client_id=&client_secret=s", "client_id=&grant_type=x"] {
            let e = err_of(to_basic(body));
            assert_eq!(
                (e.status, e.description),
                (400, "client_id is empty"),
                "{body}"
            );
        }
    }

    #[test]
    fn repeated_credential_parameters_are_invalid_request() {
        for body in [
            "client_id=a&client_id=a&client_secret=s",
            "client_id=a&client_secret=s&client_secret=t",
            "client_id=a&client%5Fid=b",
            "client_assertion=x&client_assertion=y",
        ] {
            let e = err_of(to_basic(body));
            assert_eq!(e.status, 400, "{body}");
            assert!(e.description.contains("more than once"), "{body}");
        }
    }

    #[test]
    fn other_repeated_parameters_pass_byte_for_byte() {
        let body = "resource=https%3A%2F%2Fa&resource=https%3A%2F%2Fb&client_id=c&client_secret=s";
        let f = to_basic(body).unwrap();
        assert_eq!(
            f.body.as_deref(),
            Some(&b"resource=https%3A%2F%2Fa&resource=https%3A%2F%2Fb"[..])
        );
    }

    #[test]
    fn malformed_escapes_anywhere_are_invalid_request() {
        for body in [
            "client_id=a%zz&client_secret=s",
            "code=%4&client_id=a",
            "%zz=1",
        ] {
            let e = err_of(to_basic(body));
            assert_eq!(e.status, 400, "{body}");
            assert!(e.description.contains("percent-escape"));
        }
    }

    #[test]
    fn post_and_basic_together_is_invalid_request() {
        let h = basic("app:s");
        let e = decide(
            &[h.as_bytes()],
            b"client_id=app&client_secret=s",
            Conversion::ToBasic,
            RFC,
        )
        .unwrap_err();
        assert_eq!((e.status, e.code), (400, ErrorCode::InvalidRequest));
        assert_eq!(e.description, TWO_METHODS);
    }

    #[test]
    fn basic_and_a_body_secret_without_client_id_is_two_methods() {
        let h = basic("app:s");
        let e = decide(
            &[h.as_bytes()],
            b"client_secret=s",
            Conversion::ToBasic,
            RFC,
        )
        .unwrap_err();
        assert_eq!(e.description, TWO_METHODS);
    }

    #[test]
    fn secret_and_assertion_together_is_invalid_request() {
        let e = err_of(to_basic("client_id=a&client_secret=s&client_assertion=j"));
        assert_eq!(e.description, TWO_METHODS);
        let h = basic("app:s");
        let e = decide(
            &[h.as_bytes()],
            b"client_assertion=j",
            Conversion::ToPost,
            RFC,
        )
        .unwrap_err();
        assert_eq!(e.description, TWO_METHODS);
    }

    #[test]
    fn two_authorization_headers_are_invalid_request() {
        let (a, b) = (basic("a:1"), basic("b:2"));
        let e = decide(&[a.as_bytes(), b.as_bytes()], b"", Conversion::ToPost, RFC).unwrap_err();
        assert_eq!(e.status, 400);
    }

    #[test]
    fn malformed_basic_is_invalid_client_with_challenge() {
        let no_colon = basic("nocolon");
        for h in [&b"Basic %%%"[..], no_colon.as_bytes()] {
            let e = decide(&[h], b"grant_type=x", Conversion::ToPost, RFC).unwrap_err();
            assert_eq!(
                (e.status, e.code, e.www_authenticate),
                (401, ErrorCode::InvalidClient, true)
            );
        }
    }

    #[test]
    fn body_client_id_differing_from_basic_is_invalid_request() {
        let h = basic("app:s");
        let e = decide(&[h.as_bytes()], b"client_id=other", Conversion::ToPost, RFC).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.description.contains("does not match"));
    }

    #[test]
    fn basic_to_post_appends_encoded_credentials() {
        let h = basic("my%3Aapp:%3A+%2B%25%26%3D%2F%C3%A9%2541");
        let f = decide(
            &[h.as_bytes()],
            b"grant_type=client_credentials&scope=a+b",
            Conversion::ToPost,
            RFC,
        )
        .unwrap();
        assert_eq!(f.method_seen, MethodSeen::BASIC);
        assert_eq!(f.authorization, HeaderChange::Remove);
        assert_eq!(
            f.body.as_deref(),
            Some(&b"grant_type=client_credentials&scope=a+b&client_id=my%3Aapp&client_secret=%3A+%2B%25%26%3D%2F%C3%A9%2541"[..])
        );
    }

    #[test]
    fn basic_to_post_replaces_a_matching_body_client_id() {
        let h = basic("app:s");
        let f = decide(
            &[h.as_bytes()],
            b"client_id=app&code=c",
            Conversion::ToPost,
            RFC,
        )
        .unwrap();
        assert_eq!(
            f.body.as_deref(),
            Some(&b"code=c&client_id=app&client_secret=s"[..])
        );
    }

    #[test]
    fn basic_to_post_with_empty_body() {
        let h = basic("app:s");
        let f = decide(&[h.as_bytes()], b"", Conversion::ToPost, RFC).unwrap();
        assert_eq!(
            f.body.as_deref(),
            Some(&b"client_id=app&client_secret=s"[..])
        );
    }

    #[test]
    fn basic_on_a_to_basic_route_is_kept_as_sent() {
        let h = basic("app:s%2B");
        let f = decide(&[h.as_bytes()], b"grant_type=x", Conversion::ToBasic, RFC).unwrap();
        assert_eq!((f.authorization, f.body), (HeaderChange::Keep, None));
        // A raw upstream gets the decoded form.
        let f = decide(
            &[h.as_bytes()],
            b"grant_type=x",
            Conversion::ToBasic,
            BasicEncoding::Raw,
        )
        .unwrap();
        assert_eq!(f.authorization, HeaderChange::Set(basic("app:s+").into()));
    }

    #[test]
    fn post_on_a_to_post_route_is_unchanged() {
        let f = decide(&[], b"client_id=a&client_secret=s", Conversion::ToPost, RFC).unwrap();
        assert_eq!((f.method_seen, f.converted()), (MethodSeen::POST, false));
    }

    #[test]
    fn other_authorization_schemes_pass_unchanged() {
        let f = decide(&[b"Bearer t"], b"grant_type=x", Conversion::ToPost, RFC).unwrap();
        assert_eq!(
            (f.method_seen, f.converted()),
            (MethodSeen::OtherScheme, false)
        );
        let e = decide(
            &[b"Bearer t"],
            b"client_id=a&client_secret=s",
            Conversion::ToBasic,
            RFC,
        )
        .unwrap_err();
        assert_eq!(e.description, TWO_METHODS);
    }

    #[test]
    fn client_assertion_passes_unchanged() {
        let f = to_basic("client_assertion_type=urn%3Ax&client_assertion=jwt&client_id=a").unwrap();
        assert_eq!(
            (f.method_seen, f.converted()),
            (MethodSeen::ClientAssertion, false)
        );
    }

    #[test]
    fn no_error_description_contains_the_secret() {
        let secret = "S3cr3t-Value";
        let bodies = [
            format!("client_id=a&client_secret={secret}&client_secret={secret}"),
            format!("client_id=a&client_secret={secret}%zz"),
            format!("client_secret={secret}"),
        ];
        for b in &bodies {
            let e = err_of(to_basic(b));
            assert!(!String::from_utf8_lossy(&e.body()).contains(secret));
        }
    }

    fn param() -> impl Strategy<Value = String> {
        // A raw, well-formed piece that is not a credential parameter.
        ("[a-z_]{1,8}", "([A-Za-z0-9*._~!:/+-]|%[0-9A-F]{2}){0,12}")
            .prop_filter("not a credential", |(n, _)| {
                CredParam::from_name(n.as_bytes()).is_none()
            })
            .prop_map(|(n, v)| format!("{n}={v}"))
    }

    proptest! {
        /// Converting post → basic keeps every other piece byte-exact and in order, and the
        /// header carries exactly the decoded credentials.
        #[test]
        fn post_to_basic_keeps_others_and_round_trips(
            others in proptest::collection::vec(param(), 0..6),
            id in "\\PC{1,16}", secret in "\\PC{0,24}",
            id_at in 0usize..7, secret_at in 0usize..8,
        ) {
            let mut pieces = others.clone();
            let id_piece = format!("client_id={}", form::encode(id.as_bytes()));
            let secret_piece = format!("client_secret={}", form::encode(secret.as_bytes()));
            pieces.insert(id_at.min(pieces.len()), id_piece);
            pieces.insert(secret_at.min(pieces.len()), secret_piece);
            let body = pieces.join("&");

            let f = to_basic(&body).unwrap();
            prop_assert_eq!(f.body.unwrap(), others.join("&").into_bytes());
            let HeaderChange::Set(h) = f.authorization else { panic!("no header") };
            let back = basic::parse_authorization(h.as_bytes()).unwrap();
            prop_assert_eq!(back, Authorization::Basic(Credentials {
                client_id: id.into_bytes(), secret: secret.into_bytes().into() }));
        }

        /// Converting basic → post and parsing the result gives back the same credentials.
        #[test]
        fn basic_to_post_round_trips(
            others in proptest::collection::vec(param(), 0..6),
            id in "\\PC{1,16}", secret in "\\PC{0,24}",
        ) {
            let creds = Credentials { client_id: id.into_bytes(), secret: secret.into_bytes().into() };
            let h = basic::encode(&creds, RFC).unwrap();
            let body = others.join("&");
            let f = decide(&[h.as_bytes()], body.as_bytes(), Conversion::ToPost, RFC).unwrap();
            let new_body = f.body.unwrap();
            prop_assert!(new_body.starts_with(body.as_bytes()));
            // Converting back yields the original header.
            let back = decide(&[], &new_body, Conversion::ToBasic, RFC).unwrap();
            prop_assert_eq!(back.authorization, HeaderChange::Set(h));
            prop_assert_eq!(back.body.unwrap(), body.into_bytes());
        }

        #[test]
        fn decide_never_panics(body in any::<Vec<u8>>(), h in any::<Vec<u8>>()) {
            let _ = decide(&[&h], &body, Conversion::ToPost, RFC);
            let _ = decide(&[], &body, Conversion::ToBasic, BasicEncoding::Raw);
        }
    }

    #[test]
    fn secrets_in_a_query_string_are_recognized_but_a_bare_client_id_is_not() {
        for q in [
            "client_id=web-app&client_secret=x",
            "client%5Fsecret=x",
            "a=1&client_assertion=j",
            "client_assertion_type=urn",
            "client+secret=x&client_secret",
        ] {
            assert!(query_carries_secrets(q.as_bytes()), "{q}");
        }
        for q in [
            "client_id=web-app&response_type=code",
            "",
            "secret=x",
            "client_secret%zz=x",
        ] {
            assert!(!query_carries_secrets(q.as_bytes()), "{q}");
        }
    }

    #[test]
    fn debug_of_a_decision_never_shows_credentials() {
        let secret = "Hunter2-Very-Secret";
        let body = format!("grant_type=x&client_id=app&client_secret={secret}");
        let to_basic = decide(&[], body.as_bytes(), Conversion::ToBasic, RFC).unwrap();
        let auth = format!("Basic {}", STANDARD.encode(format!("app:{secret}")));
        let to_post = decide(&[auth.as_bytes()], b"a=1", Conversion::ToPost, RFC).unwrap();
        let ambiguous = format!("Basic {}", STANDARD.encode(format!("app:{secret}+%41")));
        let x = extract(&[ambiguous.as_bytes()], b"").unwrap();
        let encoded = STANDARD.encode(format!("app:{secret}"));
        for shown in [
            format!("{to_basic:?}"),
            format!("{to_post:?}"),
            format!("{:?}", to_post.authorization),
            format!("{x:?}"),
            format!("{:?}", x.with_reading(Reading::Raw)),
        ] {
            assert!(
                !shown.contains(secret) && !shown.contains(&encoded),
                "{shown}"
            );
        }
    }

    #[test]
    fn an_upgrade_to_an_assertion_drops_the_secret_and_keeps_everything_else() {
        let body = b"grant_type=authorization_code&client_id=app&code=c&client_secret=s%2B";
        let f = extract(&[], body).unwrap().to_assertion(body).unwrap();
        assert_eq!(f.authorization, HeaderChange::Keep);
        assert_eq!(
            f.body.as_deref(),
            Some(
                &b"grant_type=authorization_code&client_id=app&code=c&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"[..]
            )
        );
        let auth = basic("my%3Aapp:s%2B");
        let auth = [auth.as_bytes()];
        let body = b"grant_type=client_credentials&scope=a";
        let f = extract(&auth, body).unwrap().to_assertion(body).unwrap();
        assert_eq!(
            (f.method_seen, f.authorization),
            (MethodSeen::BASIC, HeaderChange::Remove)
        );
        let sent = String::from_utf8(f.body.unwrap().into_vec()).unwrap();
        assert!(
            sent.starts_with(
                "grant_type=client_credentials&scope=a&client_id=my%3Aapp&client_assertion_type="
            ),
            "{sent}"
        );
        assert!(!sent.contains("s%2B"));
        let public = extract(&[], b"client_id=spa&code=c").unwrap();
        assert_eq!(
            public
                .to_assertion(b"client_id=spa&code=c")
                .unwrap_err()
                .status,
            401
        );
    }
}
