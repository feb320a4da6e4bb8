//! The gateway's own upstream client for token routes: one request, written in one go on a kept-
//! alive connection, and its answer read whole.
//!
//! What it promises, because token requests are not idempotent (an authorization code works once):
//! a request is never sent twice. Only a connection that failed before any byte was written is
//! tried again: a connect failure (once, on the upstream's next address if it has several), or a
//! pooled connection the server had closed (found so when checked out, or when the first write
//! fails). Once a byte went out, a failure is the client's 502 or 504.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use pingora::time::fast_timeout::fast_timeout;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::response::{self, Chunked, Framing, Head, ResponseError};
use crate::protocol::{OAuthError, SecretBytes};
use crate::upstream::conn::{Conn, ConnectError};
use crate::upstream::Upstream;

/// The longest response head read.
const MAX_HEAD: usize = 64 * 1024;
/// The longest response body read (token endpoints answer with a few hundred bytes).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// An upstream's answer, whole.
#[derive(Debug)]
pub struct Answer {
    pub head: Head,
    /// The bytes `head` was parsed from (its fields are ranges of them).
    pub raw_head: Bytes,
    pub body: Bytes,
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// The host name has not resolved.
    NoAddress,
    Connect(ConnectError),
    WriteTimeout,
    Write(io::Error),
    ReadTimeout,
    Read(io::Error),
    /// The upstream closed the connection before its answer was complete.
    Closed,
    Invalid(ResponseError),
    TooLarge,
    /// The request could not be built (a client assertion could not be signed).
    Build(OAuthError),
}

impl ExchangeError {
    /// The `kind` label of `tokengate_upstream_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            ExchangeError::NoAddress | ExchangeError::Connect(ConnectError::Refused(_)) => {
                "connect"
            }
            ExchangeError::Connect(ConnectError::Timeout | ConnectError::TlsTimeout)
            | ExchangeError::WriteTimeout
            | ExchangeError::ReadTimeout => "timeout",
            ExchangeError::Connect(ConnectError::Tls(_)) => "tls",
            ExchangeError::Write(_) | ExchangeError::Read(_) | ExchangeError::Closed => "reset",
            ExchangeError::Invalid(_) | ExchangeError::TooLarge | ExchangeError::Build(_) => {
                "other"
            }
        }
    }

    /// The answer the client gets: 504 for a timeout, 502 otherwise (the gateway's own failure
    /// to build the request: its 500).
    pub fn answer(&self) -> OAuthError {
        if let ExchangeError::Build(e) = self {
            return e.clone();
        }
        if self.kind() == "timeout" {
            OAuthError::upstream_timeout()
        } else {
            OAuthError::upstream_unreachable()
        }
    }
}

/// Sends the request `build` makes (once per attempt: a client assertion is new each time) to the
/// upstream and reads its answer (see the module docs for retries).
pub async fn round_trip(
    up: &Upstream,
    mut build: impl FnMut() -> Result<SecretBytes, OAuthError>,
) -> Result<Answer, ExchangeError> {
    let mut addr = up.pick().ok_or(ExchangeError::NoAddress)?.addr;
    let s = &up.settings;
    let mut connect_failures = 0;
    loop {
        let (mut conn, pooled) = match up.pool.take(addr, s.idle_timeout) {
            Some(conn) => (conn, true),
            None => match up.connector.connect(addr).await {
                Ok(conn) => {
                    up.connected(addr);
                    (conn, false)
                }
                Err(e @ (ConnectError::Refused(_) | ConnectError::Timeout)) => {
                    up.connect_failed(addr);
                    // Once: the next address (a single one: again, if it refused).
                    let next = up.pick_after(addr).map(|t| t.addr);
                    let retry = matches!(e, ConnectError::Refused(_)) || next != Some(addr);
                    match next {
                        Some(next) if connect_failures == 0 && retry => {
                            connect_failures += 1;
                            addr = next;
                            continue;
                        }
                        _ => return Err(ExchangeError::Connect(e)),
                    }
                }
                Err(e) => return Err(ExchangeError::Connect(e)),
            },
        };
        let request = build().map_err(ExchangeError::Build)?;
        match write_all(&mut conn, &request, s.write_timeout).await {
            Ok(()) => {}
            // Nothing went out on a connection the server had closed: another one may try.
            Err((0, _)) if pooled => continue,
            Err((_, e)) => return Err(e),
        }
        let answer = read_answer(&mut conn, s.read_timeout).await?;
        if answer.head.keep_alive {
            up.pool.put(conn, addr);
        }
        return Ok(answer);
    }
}

/// Writes all of `data`; on failure, how much had been written.
async fn write_all(
    conn: &mut Conn,
    data: &[u8],
    timeout: Duration,
) -> Result<(), (usize, ExchangeError)> {
    let mut written = 0;
    while written < data.len() {
        match fast_timeout(timeout, conn.write(&data[written..])).await {
            Ok(Ok(0)) => return Err((written, ExchangeError::Closed)),
            Ok(Ok(n)) => written += n,
            Ok(Err(e)) => return Err((written, ExchangeError::Write(e))),
            Err(_) => return Err((written, ExchangeError::WriteTimeout)),
        }
    }
    match fast_timeout(timeout, conn.flush()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err((written, ExchangeError::Write(e))),
        Err(_) => Err((written, ExchangeError::WriteTimeout)),
    }
}

/// Reads more of the answer into `buf` (each read bounded by `timeout`); `false` at its end.
async fn fill(
    conn: &mut Conn,
    buf: &mut Vec<u8>,
    timeout: Duration,
) -> Result<bool, ExchangeError> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    match fast_timeout(timeout, conn.read_buf(buf)).await {
        Ok(Ok(0)) => Ok(false),
        Ok(Ok(_)) => Ok(true),
        Ok(Err(e)) => Err(ExchangeError::Read(e)),
        Err(_) => Err(ExchangeError::ReadTimeout),
    }
}

/// Reads one answer: its head (interim 1xx answers skipped) and its whole body.
async fn read_answer(conn: &mut Conn, timeout: Duration) -> Result<Answer, ExchangeError> {
    let mut buf = Vec::with_capacity(4096);
    let mut head = loop {
        match response::parse_head(&buf, false).map_err(ExchangeError::Invalid)? {
            Some(head) if (100..200).contains(&head.status) && head.status != 101 => {
                buf.drain(..head.len);
            }
            Some(head) => break head,
            None if buf.len() > MAX_HEAD => return Err(ExchangeError::TooLarge),
            None => {
                if !fill(conn, &mut buf, timeout).await? {
                    return Err(ExchangeError::Closed);
                }
            }
        }
    };
    let len = head.len;
    let body = match head.framing {
        Framing::Empty => {
            buf.truncate(len);
            Vec::new()
        }
        Framing::Length(n) => {
            if n > MAX_BODY {
                return Err(ExchangeError::TooLarge);
            }
            // The body stays behind the head in the one buffer: nothing is copied.
            while buf.len() < len + n {
                if !fill(conn, &mut buf, timeout).await? {
                    return Err(ExchangeError::Closed);
                }
            }
            if buf.len() > len + n {
                // More than the answer: the connection is out of step, never to be reused.
                head.keep_alive = false;
                buf.truncate(len + n);
            }
            let all = Bytes::from(buf);
            return Ok(Answer {
                head,
                raw_head: all.slice(..len),
                body: all.slice(len..),
            });
        }
        Framing::UntilClose => {
            let mut body = buf.split_off(len);
            while fill(conn, &mut body, timeout).await? {
                if body.len() > MAX_BODY {
                    return Err(ExchangeError::TooLarge);
                }
            }
            body
        }
        Framing::Chunked => {
            let mut raw = buf.split_off(len);
            let mut decoder = Chunked::default();
            let mut out = Vec::with_capacity(raw.len());
            loop {
                let used = decoder
                    .decode(&raw, &mut out)
                    .map_err(ExchangeError::Invalid)?;
                raw.drain(..used);
                if decoder.done() {
                    head.keep_alive &= raw.is_empty();
                    break;
                }
                if out.len() > MAX_BODY {
                    return Err(ExchangeError::TooLarge);
                }
                if !fill(conn, &mut raw, timeout).await? {
                    return Err(ExchangeError::Closed);
                }
            }
            out
        }
    };
    Ok(Answer {
        head,
        raw_head: Bytes::from(buf),
        body: Bytes::from(body),
    })
}
