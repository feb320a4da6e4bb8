//! Per-client policy: which methods and grant types a known client may use. Pure.

use super::record::ClientRecord;
use crate::protocol::{AuthMethod, ErrorCode, OAuthError};

/// The one answer for every failed client authentication (unknown client, wrong secret, disabled
/// client), so that the answer never tells whether the client exists.
pub fn authentication_failed(tried_basic: bool) -> OAuthError {
    OAuthError::invalid_client("client authentication failed", tried_basic)
}

/// Checks before the secret: the client is enabled and may use this method.
pub fn check_method(
    record: &ClientRecord,
    method: AuthMethod,
    tried_basic: bool,
) -> Result<(), OAuthError> {
    if !record.enabled {
        return Err(authentication_failed(tried_basic));
    }
    if !record.auth_methods.contains(&method) {
        // Says that the method is refused, never which methods are allowed.
        return Err(OAuthError::invalid_client(
            "this authentication method is not allowed for this client",
            tried_basic,
        ));
    }
    Ok(())
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
            auth_methods: methods.to_vec(),
            upstream_method: None,
            grant_types: grants.map(|g| g.iter().map(|s| s.to_string()).collect()),
            enabled,
        }
    }

    #[test]
    fn allowed_method_passes() {
        let r = record(&[AuthMethod::ClientSecretBasic], None, true);
        assert!(check_method(&r, AuthMethod::ClientSecretBasic, true).is_ok());
    }

    #[test]
    fn method_not_allowed_is_invalid_client_without_naming_the_allowed_ones() {
        let r = record(&[AuthMethod::ClientSecretBasic], None, true);
        let e = check_method(&r, AuthMethod::ClientSecretPost, false).unwrap_err();
        assert_eq!(
            (e.status, e.code, e.www_authenticate),
            (401, ErrorCode::InvalidClient, false)
        );
        assert!(!e.description.contains("basic"));
    }

    #[test]
    fn disabled_client_fails_like_a_wrong_secret() {
        let r = record(&[AuthMethod::ClientSecretBasic], None, false);
        let e = check_method(&r, AuthMethod::ClientSecretBasic, true).unwrap_err();
        assert_eq!(e, authentication_failed(true));
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
