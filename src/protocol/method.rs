//! Client authentication methods: the one vocabulary that request parsing, client records,
//! conversion, metrics labels, configuration and the discovery rewrite share. Pure.
//!
//! Names are the OAuth registry's (RFC 7591 §2, RFC 8414 §2, RFC 8705 §2): `client_secret_basic`,
//! `client_secret_post`, ... PingOne writes them in capitals (`CLIENT_SECRET_BASIC`); both
//! spellings are accepted wherever an operator writes one, and the registry's is written out.

/// A client authentication method with a registered name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    /// RFC 6749 §2.3.1: `Authorization: Basic`, form-urlencoded id and secret.
    ClientSecretBasic,
    /// RFC 6749 §2.3.1: `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// RFC 7523 / OpenID Connect Core §9: an HMAC-signed client assertion.
    ClientSecretJwt,
    /// RFC 7523 / OpenID Connect Core §9: a client assertion signed with the client's key.
    PrivateKeyJwt,
    /// RFC 8705 §2.1: mutual TLS with a PKI certificate.
    TlsClientAuth,
    /// RFC 8705 §2.2: mutual TLS with a self-signed certificate.
    SelfSignedTlsClientAuth,
    /// A public client: `client_id` only, no secret.
    None,
}

impl AuthMethod {
    pub const ALL: [AuthMethod; 7] = [
        AuthMethod::ClientSecretBasic,
        AuthMethod::ClientSecretPost,
        AuthMethod::ClientSecretJwt,
        AuthMethod::PrivateKeyJwt,
        AuthMethod::TlsClientAuth,
        AuthMethod::SelfSignedTlsClientAuth,
        AuthMethod::None,
    ];

    /// The methods the gateway itself can check against a client record (and convert between,
    /// for the two secret methods).
    pub const CHECKED: [AuthMethod; 3] = [
        AuthMethod::ClientSecretBasic,
        AuthMethod::ClientSecretPost,
        AuthMethod::None,
    ];

    /// The methods a client record may name as the one its server takes: the two the gateway
    /// converts between, `none` (as sent), and the two JWT methods it upgrades secret clients to.
    pub const UPSTREAM: [AuthMethod; 5] = [
        AuthMethod::ClientSecretBasic,
        AuthMethod::ClientSecretPost,
        AuthMethod::ClientSecretJwt,
        AuthMethod::PrivateKeyJwt,
        AuthMethod::None,
    ];

    /// The registered name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::ClientSecretJwt => "client_secret_jwt",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
            AuthMethod::TlsClientAuth => "tls_client_auth",
            AuthMethod::SelfSignedTlsClientAuth => "self_signed_tls_client_auth",
            AuthMethod::None => "none",
        }
    }

    /// Parses a registered name, in lower case or PingOne's capitals (not mixed case).
    pub fn parse(name: &str) -> Option<AuthMethod> {
        let one_case = name.bytes().all(|b| !b.is_ascii_uppercase())
            || name.bytes().all(|b| !b.is_ascii_lowercase());
        if !one_case {
            return None;
        }
        AuthMethod::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(name))
    }

    /// The registered names of `methods`, joined by `, ` (for error messages).
    pub fn names(methods: &[AuthMethod]) -> String {
        methods
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The conversion that sends a request with this method (`None`: nothing to convert to).
    pub fn conversion(self) -> Option<Conversion> {
        match self {
            AuthMethod::ClientSecretBasic => Some(Conversion::ToBasic),
            AuthMethod::ClientSecretPost => Some(Conversion::ToPost),
            _ => None,
        }
    }
}

/// A set of methods (a client record's `auth_methods`): one byte, in [`AuthMethod::ALL`]'s order.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct MethodSet(u8);

impl MethodSet {
    fn bit(m: AuthMethod) -> u8 {
        let i = AuthMethod::ALL.iter().position(|x| *x == m).unwrap_or(0);
        1 << i
    }

    pub fn insert(&mut self, m: AuthMethod) {
        self.0 |= Self::bit(m);
    }

    pub fn contains(self, m: AuthMethod) -> bool {
        self.0 & Self::bit(m) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The methods, in [`AuthMethod::ALL`]'s order.
    pub fn iter(self) -> impl Iterator<Item = AuthMethod> {
        AuthMethod::ALL
            .into_iter()
            .filter(move |m| self.contains(*m))
    }
}

impl FromIterator<AuthMethod> for MethodSet {
    fn from_iter<I: IntoIterator<Item = AuthMethod>>(methods: I) -> Self {
        let mut set = MethodSet::default();
        for m in methods {
            set.insert(m);
        }
        set
    }
}

impl std::fmt::Debug for MethodSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(self.iter().map(AuthMethod::as_str))
            .finish()
    }
}

/// What a route does to client authentication before forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// `client_secret_post` → `client_secret_basic`.
    ToBasic,
    /// `client_secret_basic` → `client_secret_post`.
    ToPost,
}

impl Conversion {
    pub const ALL: [Conversion; 2] = [Conversion::ToBasic, Conversion::ToPost];

    /// The method a converted request uses.
    pub fn target(self) -> AuthMethod {
        match self {
            Conversion::ToBasic => AuthMethod::ClientSecretBasic,
            Conversion::ToPost => AuthMethod::ClientSecretPost,
        }
    }
}

/// How a request presented client authentication, as found in it (the `method` metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodSeen {
    /// A method the gateway can check: `client_secret_basic`, `client_secret_post` or `none` (a
    /// `client_id` in the body and no secret).
    Method(AuthMethod),
    /// `client_assertion` (RFC 7523: `client_secret_jwt` or `private_key_jwt`; which one, only
    /// the assertion tells).
    ClientAssertion,
    /// No client identification at all.
    NoneFound,
    /// An `Authorization` scheme other than Basic.
    OtherScheme,
}

impl MethodSeen {
    pub const BASIC: MethodSeen = MethodSeen::Method(AuthMethod::ClientSecretBasic);
    pub const POST: MethodSeen = MethodSeen::Method(AuthMethod::ClientSecretPost);
    pub const PUBLIC: MethodSeen = MethodSeen::Method(AuthMethod::None);

    pub fn as_str(self) -> &'static str {
        match self {
            MethodSeen::Method(m) => m.as_str(),
            MethodSeen::ClientAssertion => "client_assertion",
            MethodSeen::NoneFound => "none_found",
            MethodSeen::OtherScheme => "other_scheme",
        }
    }

    /// The registered method, when the request used one the gateway can check.
    pub fn method(self) -> Option<AuthMethod> {
        match self {
            MethodSeen::Method(m) => Some(m),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_in_both_spellings() {
        for m in AuthMethod::ALL {
            assert_eq!(AuthMethod::parse(m.as_str()), Some(m));
            assert_eq!(AuthMethod::parse(&m.as_str().to_ascii_uppercase()), Some(m));
        }
        assert_eq!(AuthMethod::parse("Client_Secret_Post"), None);
        assert_eq!(AuthMethod::parse("basic"), None);
        assert_eq!(AuthMethod::parse(""), None);
    }

    #[test]
    fn a_method_set_holds_each_method_once_in_registry_order() {
        let set: MethodSet = [
            AuthMethod::None,
            AuthMethod::ClientSecretPost,
            AuthMethod::None,
        ]
        .into_iter()
        .collect();
        assert!(set.contains(AuthMethod::None) && set.contains(AuthMethod::ClientSecretPost));
        assert!(!set.contains(AuthMethod::ClientSecretBasic));
        assert_eq!(
            set.iter().collect::<Vec<_>>(),
            [AuthMethod::ClientSecretPost, AuthMethod::None]
        );
        assert!(MethodSet::default().is_empty());
        let all: MethodSet = AuthMethod::ALL.into_iter().collect();
        assert_eq!(all.iter().count(), AuthMethod::ALL.len());
    }

    #[test]
    fn conversions_and_their_methods_agree() {
        for c in Conversion::ALL {
            assert_eq!(c.target().conversion(), Some(c));
        }
        assert_eq!(AuthMethod::None.conversion(), None);
        assert_eq!(AuthMethod::PrivateKeyJwt.conversion(), None);
    }

    #[test]
    fn metrics_labels_are_the_registered_names_or_what_was_found() {
        assert_eq!(MethodSeen::BASIC.as_str(), "client_secret_basic");
        assert_eq!(MethodSeen::POST.as_str(), "client_secret_post");
        assert_eq!(MethodSeen::PUBLIC.as_str(), "none");
        assert_eq!(MethodSeen::ClientAssertion.as_str(), "client_assertion");
        assert_eq!(MethodSeen::NoneFound.as_str(), "none_found");
        assert_eq!(MethodSeen::OtherScheme.as_str(), "other_scheme");
        assert_eq!(MethodSeen::OtherScheme.method(), None);
        assert_eq!(
            MethodSeen::POST.method(),
            Some(AuthMethod::ClientSecretPost)
        );
    }
}
