//! The admin listener: `/metrics` (Prometheus text format), `/healthz` (the process answers),
//! `/readyz` (every upstream, and the registry if any, has an address) and
//! `/clients/{envID}/{client_id}` (a read-only view of a client record, without its secret).
//! Bind it to loopback or a management network; optionally require a bearer token.

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Response, StatusCode};
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;
use pingora::server::ShutdownWatch;

use percent_encoding::percent_decode_str;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::clients::store::ClientKey;
use crate::drain::Drain;
use crate::metrics::Metrics;
use crate::runtime::Shared;

pub struct Admin {
    pub metrics: Arc<Metrics>,
    /// The running configuration: its upstreams must be resolvable for `/readyz`.
    pub shared: Shared,
    /// Required as `Authorization: Bearer …` on every path but the probes (`/healthz`, `/readyz`).
    pub bearer_token: Option<String>,
    /// Set on SIGTERM: `/readyz` answers 503 from then on.
    pub drain: Arc<Drain>,
}

impl Admin {
    fn authorized(&self, session: &ServerSession) -> bool {
        let Some(token) = &self.bearer_token else {
            return true;
        };
        let presented = session
            .req_header()
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .unwrap_or_default();
        // Compare digests in constant time, so neither content nor length leaks.
        let digest = |b: &[u8]| -> [u8; 32] { Sha256::digest(b).into() };
        bool::from(digest(presented).ct_eq(&digest(token.as_bytes())))
    }

    /// A client record as JSON, without secret material; `None` when unknown (or not cached).
    fn client_view(&self, env_id: &str, client_id: &[u8]) -> Option<Vec<u8>> {
        let rt = self.shared.load();
        let record = rt
            .client_store()?
            .peek(&ClientKey::new(env_id, client_id))?;
        let view = serde_json::json!({
            "env_id": &*record.env_id,
            "client_id": &*record.client_id,
            "auth_methods": record.auth_methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
            "upstream_method": record.upstream_method.map(|m| m.as_str()),
            "grant_types": record.grant_types.as_deref(),
            "enabled": record.enabled,
            "secret_kind": record.secret.as_ref().map(|s| s.kind()),
        });
        serde_json::to_vec_pretty(&view).ok()
    }
}

fn text(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let len = resp.body().len();
    let h = resp.headers_mut();
    if let Ok(v) = content_type.parse() {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, len.into());
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    resp
}

/// The admin listener's HTTP app. Pingora's `ServeHttp` logs a head that fails to parse whole,
/// `Authorization` included, at error level: this app says only what went wrong.
#[async_trait]
impl HttpServerApp for Admin {
    async fn process_new_http(
        self: &Arc<Self>,
        mut http: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match http.read_request().await {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                // Never `{e}`: its context quotes the request head.
                tracing::warn!(error = e.etype().as_str(), "admin: unreadable request");
                return None;
            }
        }
        let keepalive = if *shutdown.borrow() { None } else { Some(60) };
        http.set_keepalive(keepalive);
        let (parts, body) = self.response(&mut http).await.into_parts();
        let head: ResponseHeader = parts.into();
        if let Err(e) = http.write_response_header(Box::new(head)).await {
            tracing::debug!(error = e.etype().as_str(), "admin: could not answer");
            return None;
        }
        if !body.is_empty() {
            if let Err(e) = http.write_response_body(body.into(), true).await {
                tracing::debug!(error = e.etype().as_str(), "admin: could not answer");
                return None;
            }
        }
        let persistent = HttpPersistentSettings::for_session(&http);
        match http.finish().await {
            Ok(reusable) => reusable.map(|s| ReusedHttpStream::from_reusable_stream(s, persistent)),
            Err(e) => {
                tracing::debug!(error = e.etype().as_str(), "admin: could not finish");
                None
            }
        }
    }
}

impl Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"GET only\n".to_vec(),
            );
        }
        let path = req.uri.path().to_string();
        let probe = path == "/healthz" || path == "/readyz";
        if !probe && !self.authorized(session) {
            let mut resp = text(
                StatusCode::UNAUTHORIZED,
                "text/plain",
                b"bearer token required\n".to_vec(),
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"tokengate-admin\""),
            );
            return resp;
        }
        if let Some(rest) = path.strip_prefix("/clients/") {
            let Some((env, id)) = rest.split_once('/') else {
                return text(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    b"use /clients/{envID}/{client_id}\n".to_vec(),
                );
            };
            let env = percent_decode_str(env).decode_utf8_lossy();
            let id: Vec<u8> = percent_decode_str(id).collect();
            return match self.client_view(&env, &id) {
                Some(body) => text(StatusCode::OK, "application/json", body),
                None => text(
                    StatusCode::NOT_FOUND,
                    "text/plain",
                    b"no such client (or not cached)\n".to_vec(),
                ),
            };
        }
        match path.as_str() {
            "/metrics" => text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            "/healthz" => text(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" if self.drain.is_draining() => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                b"not ready: stopping\n".to_vec(),
            ),
            "/readyz" => {
                let rt = self.shared.load();
                let missing: Vec<&str> = rt
                    .resolved
                    .iter()
                    .filter(|u| u.address().is_none())
                    .map(|u| u.settings.name.as_str())
                    .collect();
                if missing.is_empty() {
                    text(StatusCode::OK, "text/plain", b"ready\n".to_vec())
                } else {
                    let body = format!(
                        "not ready: unresolved upstream(s): {}\n",
                        missing.join(", ")
                    );
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        body.into_bytes(),
                    )
                }
            }
            _ => text(StatusCode::NOT_FOUND, "text/plain", b"not found\n".to_vec()),
        }
    }
}
