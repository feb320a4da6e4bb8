//! Client records from an HTTP registry: `GET {base}/{envID}/clients/{client_id}` answering a JSON
//! record (200) or 404 for an unknown client. Every call is bounded by a timeout, at most
//! `registry_max_inflight` run at once; connections are pooled by Pingora's connector.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::header;
use percent_encoding::{percent_encode, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use pingora::connectors::http::Connector;
use pingora::http::RequestHeader;
use tokio::sync::Semaphore;

use super::cache::{Fetch, FetchError};
use super::record::{parse_registry_record, ClientKey, ClientRecord};
use crate::upstream::Upstream;

/// A path segment keeps only RFC 3986 unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Largest registry answer read.
const MAX_BODY: usize = 64 * 1024;

/// How long a lookup waits for one of the `max_inflight` fetches to end before it gives up.
const INFLIGHT_WAIT: Duration = Duration::from_millis(100);

/// An HTTP client registry.
pub struct Registry {
    upstream: Arc<Upstream>,
    base_path: String,
    timeout: Duration,
    /// Fetches running at once (distinct unknown ids cannot flood the registry).
    inflight: Semaphore,
    connector: Connector,
}

impl Registry {
    /// `upstream` is where the registry is; `base_path` (no trailing `/`) prefixes every lookup.
    pub fn new(
        upstream: Arc<Upstream>,
        base_path: &str,
        timeout: Duration,
        max_inflight: usize,
    ) -> Registry {
        Registry {
            upstream,
            base_path: base_path.trim_end_matches('/').to_string(),
            timeout,
            inflight: Semaphore::new(max_inflight),
            connector: Connector::new(None),
        }
    }

    /// The registry's upstream (to keep resolved).
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// The request path for a client.
    pub fn path(&self, env_id: &str, client_id: &[u8]) -> String {
        format!(
            "{}/{}/clients/{}",
            self.base_path,
            utf8_percent_encode(env_id, SEGMENT),
            percent_encode(client_id, SEGMENT)
        )
    }

    async fn get(&self, path: &str) -> Result<(u16, Vec<u8>), String> {
        let peer = self.upstream.peer().ok_or("registry host not resolved")?;
        let (mut session, _reused) = self
            .connector
            .get_http_session(&*peer)
            .await
            .map_err(|e| format!("connect: {}", e.etype().as_str()))?;
        let mut req =
            RequestHeader::build("GET", path.as_bytes(), Some(3)).map_err(|e| e.to_string())?;
        req.insert_header(header::HOST, self.upstream.settings.host_header.as_str())
            .map_err(|e| e.to_string())?;
        req.insert_header(header::ACCEPT, "application/json")
            .map_err(|e| e.to_string())?;
        let io = |e: Box<pingora::Error>| format!("exchange: {}", e.etype().as_str());
        session
            .write_request_header(Box::new(req))
            .await
            .map_err(io)?;
        session.finish_request_body().await.map_err(io)?;
        session.read_response_header().await.map_err(io)?;
        let status = session
            .response_header()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        let mut body = Vec::new();
        while let Some(chunk) = session.read_response_body().await.map_err(io)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err("answer too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        self.connector
            .release_http_session(session, &*peer, Some(self.upstream.settings.idle_timeout))
            .await;
        Ok((status, body))
    }
}

#[async_trait]
impl Fetch<ClientKey, ClientRecord> for Registry {
    async fn fetch(&self, key: &ClientKey) -> Result<Option<ClientRecord>, FetchError> {
        let (env_id, client_id) = (key.env_id(), key.client_id());
        let path = self.path(env_id, client_id);
        let Ok(Ok(_permit)) = tokio::time::timeout(INFLIGHT_WAIT, self.inflight.acquire()).await
        else {
            return Err(FetchError(
                "registry busy: too many lookups in flight".into(),
            ));
        };
        let (status, body) = tokio::time::timeout(self.timeout, self.get(&path))
            .await
            .map_err(|_| FetchError("registry timeout".into()))?
            .map_err(FetchError)?;
        match status {
            200 => parse_registry_record(&body, env_id, client_id)
                .map(Some)
                .map_err(|e| FetchError(format!("registry answer refused: {e}"))),
            404 => Ok(None),
            other => Err(FetchError(format!("registry answered {other}"))),
        }
    }
}
