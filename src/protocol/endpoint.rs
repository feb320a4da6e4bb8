//! The client-authenticated endpoints a route can front. Pure.
//!
//! RFC 7662 (introspection), RFC 7009 (revocation), RFC 9126 (PAR) and RFC 8628 (device
//! authorization) authenticate clients exactly as the token endpoint does (RFC 6749 §2.3), and
//! PingOne applies an application's `tokenEndpointAuthMethod` to all of them. So every endpoint gets
//! the same request checks, conversion and validation; they differ only in which grant type a
//! client must be allowed for the call (a client's `grant_types` list).

/// An endpoint that authenticates clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// RFC 6749 §3.2.
    Token,
    /// RFC 7662.
    Introspection,
    /// RFC 7009.
    Revocation,
    /// RFC 9126 pushed authorization requests.
    Par,
    /// RFC 8628 §3.1.
    DeviceAuthorization,
}

/// The grant-type check a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantCheck<'a> {
    /// The client must be allowed this grant type (`None`: the request named none).
    Required(Option<&'a [u8]>),
    /// No grant type is involved (introspection and revocation of the client's own tokens).
    NotApplicable,
}

/// RFC 8628's grant type.
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

impl Endpoint {
    pub const ALL: [Endpoint; 5] = [
        Endpoint::Token,
        Endpoint::Introspection,
        Endpoint::Revocation,
        Endpoint::Par,
        Endpoint::DeviceAuthorization,
    ];

    /// The configuration name.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Token => "token",
            Endpoint::Introspection => "introspection",
            Endpoint::Revocation => "revocation",
            Endpoint::Par => "par",
            Endpoint::DeviceAuthorization => "device_authorization",
        }
    }

    pub fn parse(name: &str) -> Option<Endpoint> {
        Endpoint::ALL.into_iter().find(|e| e.as_str() == name)
    }

    /// Whether `client_id` in the body is a parameter of the request itself, not only client
    /// authentication: a pushed authorization request carries the authorization request's
    /// parameters, `client_id` among them (RFC 9126 §2.1, RFC 6749 §4.1.1). It then stays in the
    /// body when the secret moves to Basic (servers such as oidc-provider require it there).
    pub fn client_id_is_a_request_parameter(self) -> bool {
        self == Endpoint::Par
    }

    /// Which grant type the client must be allowed, given the request's `grant_type`: the token
    /// endpoint's own; PAR starts an authorization code flow; device authorization starts a device
    /// code flow; introspection and revocation involve none.
    pub fn grant_check(self, grant_type: Option<&[u8]>) -> GrantCheck<'_> {
        match self {
            Endpoint::Token => GrantCheck::Required(grant_type),
            Endpoint::Par => GrantCheck::Required(Some(b"authorization_code")),
            Endpoint::DeviceAuthorization => {
                GrantCheck::Required(Some(DEVICE_CODE_GRANT.as_bytes()))
            }
            Endpoint::Introspection | Endpoint::Revocation => GrantCheck::NotApplicable,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for e in Endpoint::ALL {
            assert_eq!(Endpoint::parse(e.as_str()), Some(e));
        }
        assert_eq!(Endpoint::parse("TOKEN"), None);
        assert_eq!(Endpoint::parse("introspect"), None);
    }

    #[test]
    fn grant_checks_follow_the_flow_each_endpoint_belongs_to() {
        let g = Some(&b"client_credentials"[..]);
        assert_eq!(Endpoint::Token.grant_check(g), GrantCheck::Required(g));
        assert_eq!(
            Endpoint::Token.grant_check(None),
            GrantCheck::Required(None)
        );
        // A grant_type parameter on other endpoints does not choose the check.
        assert_eq!(
            Endpoint::Par.grant_check(g),
            GrantCheck::Required(Some(b"authorization_code"))
        );
        assert_eq!(
            Endpoint::DeviceAuthorization.grant_check(g),
            GrantCheck::Required(Some(DEVICE_CODE_GRANT.as_bytes()))
        );
        assert_eq!(
            Endpoint::Introspection.grant_check(g),
            GrantCheck::NotApplicable
        );
        assert_eq!(
            Endpoint::Revocation.grant_check(g),
            GrantCheck::NotApplicable
        );
    }
}
