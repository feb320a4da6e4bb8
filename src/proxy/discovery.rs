//! The discovery route kind: requests go upstream untouched; a successful metadata answer is
//! rewritten ([`crate::protocol::discovery`]) as it streams back.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Version};
use pingora::http::{RequestHeader, ResponseHeader};

use crate::protocol::discovery::{self, BodyRewriter, Outcome};
use crate::protocol::DiscoveryRewrite;

/// Where a discovery request stands.
pub enum DiscoveryState {
    /// Sent upstream; the answer's head decides whether the rewrite applies.
    Awaiting(Arc<DiscoveryRewrite>),
    /// The answer's body is being rewritten.
    Rewriting(BodyRewriter),
    /// The answer passes as the upstream sent it.
    Unchanged,
    /// The answer was rewritten.
    Rewritten,
}

impl DiscoveryState {
    pub fn new(rules: Arc<DiscoveryRewrite>) -> DiscoveryState {
        DiscoveryState::Awaiting(rules)
    }

    pub fn rewritten(&self) -> bool {
        matches!(self, DiscoveryState::Rewritten)
    }

    pub fn upstream_request(&self, req: &mut RequestHeader) {
        if let DiscoveryState::Awaiting(_) = self {
            // A metadata document is rewritten as plain JSON: ask for it uncompressed.
            req.remove_header(&header::ACCEPT_ENCODING);
        }
    }

    /// Decides from the answer's head whether its body is rewritten, and adapts the head.
    pub fn upstream_response(
        &mut self,
        request: &RequestHeader,
        response: &mut ResponseHeader,
    ) -> pingora::Result<()> {
        let DiscoveryState::Awaiting(rules) = self else {
            return Ok(());
        };
        *self = if prepare_head(request, response)? {
            DiscoveryState::Rewriting(BodyRewriter::new(rules.clone()))
        } else {
            DiscoveryState::Unchanged
        };
        Ok(())
    }

    /// Feeds the answer's body through the rewriter.
    pub fn response_body(&mut self, body: &mut Option<Bytes>, end: bool, request_id: &str) {
        let DiscoveryState::Rewriting(rewriter) = self else {
            return;
        };
        let chunk = body.take().unwrap_or_default();
        let (out, outcome) = rewriter.push(&chunk, end);
        *body = (!out.is_empty()).then(|| Bytes::from(out));
        match outcome {
            Some(Outcome::Rewritten) => *self = DiscoveryState::Rewritten,
            Some(Outcome::Unchanged) => {
                tracing::warn!(
                    request_id = %request_id,
                    "discovery answer not rewritten: not a JSON object, or over the size limit"
                );
                *self = DiscoveryState::Unchanged;
            }
            None => {}
        }
    }
}

/// The header policy of a rewritten answer. Returns whether the body is to be rewritten: a
/// successful JSON answer to GET, uncompressed, for a client that can take a chunked body (not
/// HTTP/1.0). The new length is known only at the end, so the body goes out chunked; a strong
/// validator no longer names these bytes, a weak one still names the meaning (RFC 9110 §8.8.1).
pub fn prepare_head(
    request: &RequestHeader,
    response: &mut ResponseHeader,
) -> pingora::Result<bool> {
    let h = &response.headers;
    let rewritable = request.version != Version::HTTP_10
        && discovery::is_rewritable(
            request.method.as_str().as_bytes(),
            response.status.as_u16(),
            h.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            h.get(header::CONTENT_ENCODING).map(|v| v.as_bytes()),
        );
    if !rewritable {
        return Ok(false);
    }
    response.remove_header(&header::CONTENT_LENGTH);
    response.insert_header(header::TRANSFER_ENCODING, "chunked")?;
    if let Some(etag) = response.headers.get(header::ETAG) {
        if !etag.as_bytes().starts_with(b"W/") {
            let weak = format!("W/{}", String::from_utf8_lossy(etag.as_bytes()));
            response.insert_header(header::ETAG, weak)?;
        }
    }
    Ok(true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request(method: &str, version: Version) -> RequestHeader {
        let mut r =
            RequestHeader::build(method, b"/.well-known/openid-configuration", None).unwrap();
        r.set_version(version);
        r
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (n, v) in headers {
            r.insert_header(n.to_string(), *v).unwrap();
        }
        r
    }

    const JSON: (&str, &str) = ("content-type", "application/json");

    fn header(r: &ResponseHeader, name: &str) -> Option<String> {
        r.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    #[test]
    fn a_rewritten_answer_goes_out_chunked_with_a_weak_etag() {
        let mut r = response(200, &[JSON, ("content-length", "120"), ("etag", "\"v1\"")]);
        assert!(prepare_head(&request("GET", Version::HTTP_11), &mut r).unwrap());
        assert_eq!(header(&r, "content-length"), None);
        assert_eq!(header(&r, "transfer-encoding").as_deref(), Some("chunked"));
        assert_eq!(header(&r, "etag").as_deref(), Some("W/\"v1\""));
    }

    #[test]
    fn a_weak_etag_stays_as_it_is() {
        let mut r = response(200, &[JSON, ("etag", "W/\"v1\"")]);
        assert!(prepare_head(&request("GET", Version::HTTP_11), &mut r).unwrap());
        assert_eq!(header(&r, "etag").as_deref(), Some("W/\"v1\""));
    }

    #[test]
    fn http_1_0_clients_get_the_answer_unchanged() {
        let mut r = response(200, &[JSON, ("content-length", "120"), ("etag", "\"v1\"")]);
        assert!(!prepare_head(&request("GET", Version::HTTP_10), &mut r).unwrap());
        assert_eq!(header(&r, "content-length").as_deref(), Some("120"));
        assert_eq!(header(&r, "transfer-encoding"), None);
        assert_eq!(header(&r, "etag").as_deref(), Some("\"v1\""));
    }

    #[test]
    fn errors_head_compressed_and_non_json_answers_pass_unchanged() {
        for (method, status, headers) in [
            ("GET", 404, vec![JSON]),
            ("GET", 304, vec![JSON]),
            ("HEAD", 200, vec![JSON]),
            ("GET", 200, vec![JSON, ("content-encoding", "gzip")]),
            ("GET", 200, vec![("content-type", "text/html")]),
        ] {
            let mut with_length = headers.clone();
            with_length.push(("content-length", "7"));
            let mut r = response(status, &with_length);
            assert!(
                !prepare_head(&request(method, Version::HTTP_11), &mut r).unwrap(),
                "{method} {status} {headers:?}"
            );
            assert_eq!(header(&r, "content-length").as_deref(), Some("7"));
        }
    }

    #[test]
    fn only_an_awaiting_state_strips_accept_encoding_and_decides() {
        let rules = Arc::new(DiscoveryRewrite::default());
        let mut req = request("GET", Version::HTTP_11);
        req.insert_header("accept-encoding", "gzip").unwrap();
        let mut state = DiscoveryState::new(rules);
        state.upstream_request(&mut req);
        assert!(req.headers.get("accept-encoding").is_none());

        let mut r = response(200, &[("content-type", "text/plain")]);
        state.upstream_response(&req, &mut r).unwrap();
        assert!(matches!(state, DiscoveryState::Unchanged));
        let mut body = Some(Bytes::from_static(b"x"));
        state.response_body(&mut body, true, "r");
        assert_eq!(body.as_deref(), Some(&b"x"[..]));
        assert!(!state.rewritten());
    }

    #[test]
    fn a_json_object_is_rewritten_at_the_end_of_its_body() {
        let mut state = DiscoveryState::new(Arc::new(DiscoveryRewrite::default()));
        let req = request("GET", Version::HTTP_11);
        let mut r = response(200, &[JSON]);
        state.upstream_response(&req, &mut r).unwrap();
        let mut first = Some(Bytes::from_static(b"{\"token_endpoint\":"));
        state.response_body(&mut first, false, "r");
        assert_eq!(first, None);
        let mut last = Some(Bytes::from_static(b"\"https://as/token\"}"));
        state.response_body(&mut last, true, "r");
        assert!(state.rewritten());
        let out: serde_json::Value = serde_json::from_slice(&last.unwrap()).unwrap();
        assert_eq!(
            out["token_endpoint_auth_methods_supported"],
            serde_json::json!(["client_secret_basic", "client_secret_post"])
        );
    }
}
