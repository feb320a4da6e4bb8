//! Answers the gateway gives itself: RFC 6749 §5.2 errors written to the client, and the answer
//! for a proxy attempt that failed.

use bytes::Bytes;
use http::header;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorSource, ErrorType};

use super::ctx::Ctx;
use crate::protocol::{ErrorCode, OAuthError};

/// Answers the request with `e` itself (recorded in `ctx`): `Ok(true)` for `request_filter`.
pub async fn local(session: &mut Session, ctx: &mut Ctx, e: &OAuthError) -> pingora::Result<bool> {
    ctx.answered_locally(e);
    write(session, e, &ctx.rt.settings.server.realm).await?;
    Ok(true)
}

/// Serves the gateway's public signing keys as a JWKS (RFC 7517 §5) to GET and HEAD.
pub async fn jwks(session: &mut Session, ctx: &mut Ctx) -> pingora::Result<bool> {
    let method = &session.req_header().method;
    if method != http::Method::GET && method != http::Method::HEAD {
        let mut e = OAuthError::new(405, ErrorCode::InvalidRequest, "the JWKS is read with GET");
        e.allow = Some("GET, HEAD");
        return local(session, ctx, &e).await;
    }
    let head_only = method == http::Method::HEAD;
    let body = Bytes::from(serde_json::to_vec(&ctx.rt.signing_keys.jwks()).unwrap_or_default());
    let mut resp = ResponseHeader::build(200, Some(3))?;
    resp.insert_header(header::CONTENT_TYPE, "application/json")?;
    // Servers cache a jwks_uri; a key is published before it signs (README: key rotation).
    resp.insert_header(header::CACHE_CONTROL, "public, max-age=300")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(true)
}

/// Writes a local RFC 6749 §5.2 answer (closing the connection when the error says so).
async fn write(session: &mut Session, e: &OAuthError, realm: &str) -> pingora::Result<()> {
    if e.close {
        session.as_downstream_mut().set_keepalive(None);
    }
    let body = Bytes::from(e.body());
    let headers = e.headers(realm);
    let mut resp = ResponseHeader::build(e.status, Some(headers.len() + 1))?;
    for (name, value) in headers {
        resp.insert_header(name, value)?;
    }
    resp.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(())
}

/// Maps a failed proxy attempt to the answer the client gets (`None`: the client is gone).
pub fn for_failure(e: &Error) -> Option<OAuthError> {
    use ErrorType::*;
    match (e.esource(), e.etype()) {
        (_, ConnectTimedout | TLSHandshakeTimedout) => Some(OAuthError::upstream_timeout()),
        (ErrorSource::Upstream, ReadTimedout | WriteTimedout) => {
            Some(OAuthError::upstream_timeout())
        }
        (ErrorSource::Upstream, _) => Some(OAuthError::upstream_unreachable()),
        (ErrorSource::Downstream, ReadError | WriteError | ConnectionClosed) => None,
        (ErrorSource::Downstream, ReadTimedout) => Some(OAuthError::body_timeout()),
        (ErrorSource::Downstream, _) => Some(OAuthError::body_incomplete()),
        _ => Some(OAuthError::new(
            500,
            ErrorCode::ServerError,
            "the gateway failed to handle the request",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_failures_are_502_or_504_and_a_vanished_client_gets_nothing() {
        let up = |t| for_failure(&Error::new(t).into_up()).map(|e| (e.status, e.code));
        let down = |t| for_failure(&Error::new(t).into_down()).map(|e| e.status);
        assert_eq!(
            up(ErrorType::ConnectRefused),
            Some((502, ErrorCode::ServerError))
        );
        assert_eq!(
            up(ErrorType::ReadTimedout),
            Some((504, ErrorCode::TemporarilyUnavailable))
        );
        assert_eq!(
            for_failure(&Error::new(ErrorType::ConnectTimedout)).map(|e| e.status),
            Some(504)
        );
        assert_eq!(down(ErrorType::ConnectionClosed), None);
        assert_eq!(down(ErrorType::ReadTimedout), Some(408));
        assert_eq!(down(ErrorType::InvalidHTTPHeader), Some(400));
        assert_eq!(
            for_failure(&Error::new(ErrorType::InternalError)).map(|e| e.status),
            Some(500)
        );
    }
}
