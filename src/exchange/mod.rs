//! The token route's exchange with the upstream: the one seam between a decision of the protocol
//! core and the bytes that reach the authorization server.
//!
//! Today the exchange rides on Pingora's proxy path (pingora-notes: read the whole body in
//! `request_filter` with retry buffering on, set the head in `upstream_request_filter`, replace the
//! body in `request_body_filter`). How the request is sent can change here (a dedicated client, a
//! single write of head and body) without touching the protocol core or the routing.

use std::time::Duration;

use bytes::Bytes;
use http::header;
use pingora::http::RequestHeader;
use pingora::protocols::http::ServerSession;
use pingora::ErrorType;

use crate::protocol::{Forward, HeaderChange, OAuthError, SecretBytes};

/// What is sent upstream for one token request.
pub struct Exchange {
    pub forward: Forward,
    body: Option<Bytes>,
    body_len: usize,
}

/// Never prints the body (it may carry the secret).
impl std::fmt::Debug for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exchange")
            .field("forward", &self.forward)
            .field("body_len", &self.body_len)
            .finish_non_exhaustive()
    }
}

impl Exchange {
    /// Pairs a decision with the body the client sent (zeroized here when it is replaced).
    pub fn new(forward: Forward, received: SecretBytes) -> Exchange {
        let body: Bytes = match &forward.body {
            Some(new) => Bytes::copy_from_slice(new),
            None => received.into_vec().into(),
        };
        Exchange {
            body_len: body.len(),
            body: Some(body),
            forward,
        }
    }

    /// Applies the decision to the upstream request head. The body is sent whole with a
    /// `Content-Length`, so `Expect` and `Transfer-Encoding` from the client no longer apply.
    pub fn apply_head(&self, req: &mut RequestHeader) -> pingora::Result<()> {
        match &self.forward.authorization {
            HeaderChange::Keep => {}
            HeaderChange::Remove => {
                req.remove_header(&header::AUTHORIZATION);
            }
            HeaderChange::Set(v) => req.insert_header(header::AUTHORIZATION, v.as_str())?,
        }
        req.remove_header(&header::EXPECT);
        req.remove_header(&header::TRANSFER_ENCODING);
        req.insert_header(header::CONTENT_LENGTH, self.body_len.to_string())?;
        Ok(())
    }

    /// Replaces whatever body chunk Pingora is about to send with the decided body: all of it the
    /// first time, nothing afterwards.
    pub fn replace_body(&mut self, body: &mut Option<Bytes>) {
        *body = self.body.take().filter(|b| !b.is_empty());
    }
}

/// Reads the whole request body, bounded in size and time. Must run in `request_filter`.
pub async fn read_body(
    session: &mut ServerSession,
    max_bytes: usize,
    timeout: Duration,
) -> Result<SecretBytes, OAuthError> {
    // Without this the body is consumed here and never reaches the upstream phase (the request
    // then hangs). The buffer holds 64 KiB; the configuration caps bodies below that.
    session.enable_retry_buffering();
    let read_all = async {
        let mut buf = Vec::new();
        while let Some(chunk) = session
            .read_request_body()
            .await
            .map_err(|e| match e.etype() {
                ErrorType::ReadTimedout => OAuthError::body_timeout(),
                _ => OAuthError::body_incomplete(),
            })?
        {
            if buf.len() + chunk.len() > max_bytes {
                return Err(crate::protocol::token::too_large().closing());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(SecretBytes::from(buf))
    };
    match tokio::time::timeout(timeout, read_all).await {
        Ok(result) => result,
        Err(_) => Err(OAuthError::body_timeout()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{decide, BasicEncoding, Conversion};

    #[test]
    fn debug_never_shows_the_body_or_the_header() {
        let body = b"grant_type=x&client_id=app&client_secret=Hunter2-Secret";
        let forward = decide(&[], body, Conversion::ToBasic, BasicEncoding::Rfc6749);
        let Ok(forward) = forward else {
            panic!("decided")
        };
        let x = Exchange::new(forward, body.as_slice().into());
        let shown = format!("{x:?}");
        assert!(
            !shown.contains("Hunter2") && !shown.contains("Basic"),
            "{shown}"
        );
    }
}
