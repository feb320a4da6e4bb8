//! Per-client policy: which methods and grant types a known client may use. Pure.

use super::record::ClientRecord;
use crate::protocol::{AuthMethod, ErrorCode, OAuthError};

/// The one answer for every failed client authentication (unknown client, disabled client, wrong
/// secret, a method the client may not use, no secret where one is needed, a secret where none is
/// expected), so that the answer never tells whether or how the client exists.
pub fn authentication_failed(tried_basic: bool) -> OAuthError {
    OAuthError::invalid_client("client authentication failed", tried_basic)
}

/// Whether the client may authenticate with `method`: it is enabled and the method is one of its
/// own. (Whether the secret is right is the next question.)
pub fn accepts(record: &ClientRecord, method: AuthMethod) -> bool {
    record.enabled && record.auth_methods.contains(method)
}

/// Checks after the secret: the grant type is allowed (RFC 6749 §5.2 `unauthorized_client`).
pub fn check_grant(record: &ClientRecord, grant_type: Option<&[u8]>) -> Result<(), OAuthError> {
    let Some(allowed) = &record.grant_types else {
        return Ok(());
    };
    match grant_type {
        Some(g) if allowed.iter().any(|a| a.as_bytes() == g) => Ok(()),
        _ => Err(OAuthError::new(
            400,
            ErrorCode::UnauthorizedClient,
            "the client is not authorized to use this grant type",
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(methods: &[AuthMethod], grants: Option<&[&str]>, enabled: bool) -> ClientRecord {
        ClientRecord {
            env_id: "e".into(),
            client_id: "a".into(),
            secret: None,
            auth_methods: methods.iter().copied().collect(),
            upstream_method: None,
            grant_types: grants.map(|g| g.iter().map(|s| Box::from(*s)).collect()),
            enabled,
            signing_key: None,
        }
    }

    #[test]
    fn an_enabled_client_is_accepted_with_its_own_methods_only() {
        let r = record(&[AuthMethod::ClientSecretBasic], None, true);
        assert!(accepts(&r, AuthMethod::ClientSecretBasic));
        assert!(!accepts(&r, AuthMethod::ClientSecretPost));
        assert!(!accepts(&r, AuthMethod::None));
    }

    #[test]
    fn a_disabled_client_is_accepted_with_no_method() {
        let r = record(&[AuthMethod::ClientSecretBasic], None, false);
        assert!(!accepts(&r, AuthMethod::ClientSecretBasic));
    }

    #[test]
    fn every_failed_authentication_reads_the_same() {
        let e = authentication_failed(false);
        assert_eq!(
            (e.status, e.code, e.description, e.www_authenticate),
            (
                401,
                ErrorCode::InvalidClient,
                "client authentication failed",
                false
            )
        );
        assert!(authentication_failed(true).www_authenticate);
    }

    #[test]
    fn grant_types_are_enforced_when_listed() {
        let r = record(&[AuthMethod::None], Some(&["authorization_code"]), true);
        assert!(check_grant(&r, Some(b"authorization_code")).is_ok());
        let e = check_grant(&r, Some(b"client_credentials")).unwrap_err();
        assert_eq!((e.status, e.code), (400, ErrorCode::UnauthorizedClient));
        assert!(check_grant(&r, None).is_err());
        let any = record(&[AuthMethod::None], None, true);
        assert!(check_grant(&any, Some(b"anything")).is_ok());
    }
}
