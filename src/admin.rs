//! The admin listener: `/metrics` (Prometheus text format), `/healthz` (the process answers) and
//! `/readyz` (every upstream, and the registry if any, has an address). Bind it to loopback or a
//! management network only.

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::Metrics;
use crate::upstream::Upstream;

pub struct Admin {
    pub metrics: Arc<Metrics>,
    /// Upstreams that must be resolvable for `/readyz`.
    pub upstreams: Vec<Arc<Upstream>>,
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

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        if req.method != http::Method::GET && req.method != http::Method::HEAD {
            return text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"GET only\n".to_vec(),
            );
        }
        match req.uri.path() {
            "/metrics" => text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            "/healthz" => text(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                let missing: Vec<&str> = self
                    .upstreams
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
