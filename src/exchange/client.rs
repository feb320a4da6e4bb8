//! The gateway's own upstream client for token routes: one request, written in one go on a kept-
//! alive connection, and its answer read whole (framed by [`AnswerReader`]).
//!
//! What it promises, because token requests are not idempotent (an authorization code works once):
//! a request is never sent twice. Only a connection that failed before any byte was written is
//! tried again: a connect failure (once, on the upstream's next address if it has several), or a
//! pooled connection the server had closed (found so when checked out, or when the first write
//! fails). Once a byte went out, a failure is the client's 502 or 504, with a cause for the
//! access log ([`ExchangeError::cause`]).
//!
//! Time: the request is written within the upstream's `write_timeout`; the whole answer, every
//! head and the body, then arrives within its `read_timeout` (one deadline, not one per read).
//!
//! Early answers (RFC 9112 §9.6): a server may answer before it has read the whole request (a
//! 431 for a head too large) and stop reading or close. A request that cannot be written in one
//! go is written while the connection is watched: an answer that comes stops the writing, is read
//! whole and relayed. A write that fails once bytes went out (the server closed with the request
//! unread, so the kernel reset the connection) may leave the answer in the receive buffer: what
//! arrived is read, and a complete answer relayed; else 502. Such a connection is never reused.
//!
//! Reuse: a connection goes back to the pool only when the answer allows it and ended exactly
//! where its framing said ([`Answer::reusable`]), after the whole request had gone out.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pingora::time::fast_timeout::fast_timeout;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use super::response::Answer;
use super::response::{AnswerReader, ResponseError};
use crate::protocol::{OAuthError, SecretBytes};
use crate::upstream::conn::{Conn, ConnectError};
use crate::upstream::Upstream;

/// How much is read from the connection at a time.
const READ_CHUNK: usize = 8 * 1024;

/// Why an exchange failed.
#[derive(Debug)]
pub enum ExchangeError {
    /// The host name has not resolved.
    NoAddress,
    Connect(ConnectError),
    /// The request was not all written within `write_timeout`, and no answer came meanwhile.
    WriteTimeout,
    /// Writing the request failed (or the connection took no more), and no answer had arrived.
    Write(io::Error),
    /// The whole answer did not arrive within `read_timeout`; `head`: its final head had.
    ReadTimeout {
        head: bool,
    },
    /// Reading the answer failed; `started`: some of it had arrived.
    Read {
        error: io::Error,
        started: bool,
    },
    /// The answer is not one the gateway can relay, or the connection ended before it did.
    Answer(ResponseError),
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
            | ExchangeError::ReadTimeout { .. } => "timeout",
            ExchangeError::Connect(ConnectError::Tls(_)) => "tls",
            ExchangeError::Write(_)
            | ExchangeError::Read { .. }
            | ExchangeError::Answer(ResponseError::NoAnswer | ResponseError::Truncated) => "reset",
            ExchangeError::Answer(_) | ExchangeError::Build(_) => "other",
        }
    }

    /// Why, in a few fixed words, for the access log: distinct for each failure, never a byte of
    /// the request, the answer or a secret.
    pub fn cause(&self) -> &'static str {
        match self {
            ExchangeError::NoAddress => "no address",
            ExchangeError::Connect(ConnectError::Refused(_)) => "connect refused",
            ExchangeError::Connect(ConnectError::Timeout) => "connect timeout",
            ExchangeError::Connect(ConnectError::Tls(_)) => "tls handshake failed",
            ExchangeError::Connect(ConnectError::TlsTimeout) => "tls handshake timeout",
            ExchangeError::WriteTimeout => "timeout writing request",
            ExchangeError::Write(_) => "reset while writing request",
            ExchangeError::ReadTimeout { head: false } => "timeout on answer head",
            ExchangeError::ReadTimeout { head: true } => "timeout on answer body",
            // rustls: the TCP connection ended without a close_notify.
            ExchangeError::Read { error, .. } if error.kind() == io::ErrorKind::UnexpectedEof => {
                "closed without tls close_notify"
            }
            ExchangeError::Read { started: false, .. } => "reset before the answer",
            ExchangeError::Read { started: true, .. } => "reset during the answer",
            ExchangeError::Answer(e) => e.cause(),
            ExchangeError::Build(_) => "request not built",
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
        let mut reader = AnswerReader::new(false);
        let mut scratch = Vec::with_capacity(READ_CHUNK);
        let mut written = 0;
        let sent = fast_timeout(
            s.write_timeout,
            send(&mut conn, &request, &mut written, &mut reader, &mut scratch),
        )
        .await
        .unwrap_or(Err(ExchangeError::WriteTimeout));
        let early = match sent {
            Ok(Sent::Whole) => false,
            Ok(Sent::Answered) => true,
            // Nothing went out on a connection the server had closed: another one may try.
            Err(_) if written == 0 && pooled => continue,
            Err(e @ ExchangeError::Write(_)) if written > 0 => {
                // RFC 9112 §9.6: a server that answered early and closed may have reset the
                // connection; its answer can still wait in the receive buffer. Read it.
                return match read_answer(&mut conn, reader, &mut scratch, s.read_timeout).await {
                    Ok(answer) => Ok(answer),
                    Err(
                        ExchangeError::Answer(ResponseError::NoAnswer)
                        | ExchangeError::Read { started: false, .. },
                    ) => Err(e),
                    Err(other) => Err(other),
                };
            }
            Err(e) => return Err(e),
        };
        let answer = read_answer(&mut conn, reader, &mut scratch, s.read_timeout).await?;
        // An answer that came before the whole request went out leaves the connection out of
        // step (the server has not read what was written after it).
        if answer.reusable && !early {
            up.pool.put(conn, addr);
        }
        return Ok(answer);
    }
}

/// How writing a request ended.
enum Sent {
    /// The whole request went out.
    Whole,
    /// The upstream answered (or closed) while the request was being written; writing stopped.
    Answered,
}

/// Writes `data`, counting what went out in `written`. A request usually goes out in one write
/// call and nothing else is done; only when the write has to wait is the connection also read
/// meanwhile, so that an answer given before the request was all read (a 431 for a head too
/// large, RFC 9112 §9.6) stops the writing and is read, instead of waiting on a server that no
/// longer reads.
async fn send(
    conn: &mut Conn,
    data: &[u8],
    written: &mut usize,
    reader: &mut AnswerReader,
    scratch: &mut Vec<u8>,
) -> Result<Sent, ExchangeError> {
    poll_fn(|cx| {
        loop {
            if *written < data.len() {
                match Pin::new(&mut *conn).poll_write(cx, &data[*written..]) {
                    Poll::Ready(Ok(0)) => {
                        let e = io::Error::from(io::ErrorKind::WriteZero);
                        return Poll::Ready(Err(ExchangeError::Write(e)));
                    }
                    Poll::Ready(Ok(n)) => {
                        *written += n;
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(ExchangeError::Write(e))),
                    Poll::Pending => break,
                }
            }
            match Pin::new(&mut *conn).poll_flush(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Ok(Sent::Whole)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(ExchangeError::Write(e))),
                Poll::Pending => break,
            }
        }
        // The write waits: is there an answer already?
        match poll_feed(conn, cx, scratch, reader) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(Sent::Answered)),
            // A reset before any answer: as a failed write (another connection may try if
            // nothing went out).
            Poll::Ready(Err(ExchangeError::Read { error, .. })) if reader.wire_len() == 0 => {
                Poll::Ready(Err(ExchangeError::Write(error)))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    })
    .await
}

/// Reads the rest of the answer: all of it within `timeout` (one deadline for every head and the
/// body, not one per read: a server trickling bytes cannot hold the client longer).
async fn read_answer(
    conn: &mut Conn,
    mut reader: AnswerReader,
    scratch: &mut Vec<u8>,
    timeout: Duration,
) -> Result<Answer, ExchangeError> {
    let read = async {
        while !reader.is_done() {
            poll_fn(|cx| poll_feed(conn, cx, scratch, &mut reader)).await?;
        }
        Ok(())
    };
    let read: Result<Result<(), ExchangeError>, _> = fast_timeout(timeout, read).await;
    match read {
        Ok(Ok(())) => reader
            .answer()
            .ok_or(ExchangeError::Answer(ResponseError::Truncated)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ExchangeError::ReadTimeout {
            head: reader.has_head(),
        }),
    }
}

/// Reads once from the connection and hands what came (or its end) to `reader`.
fn poll_feed(
    conn: &mut Conn,
    cx: &mut Context<'_>,
    scratch: &mut Vec<u8>,
    reader: &mut AnswerReader,
) -> Poll<Result<(), ExchangeError>> {
    let mut buf = ReadBuf::uninit(scratch.spare_capacity_mut());
    let fed = match Pin::new(conn).poll_read(cx, &mut buf) {
        Poll::Pending => return Poll::Pending,
        Poll::Ready(Err(error)) => {
            return Poll::Ready(Err(ExchangeError::Read {
                error,
                started: reader.wire_len() > 0,
            }))
        }
        Poll::Ready(Ok(())) if buf.filled().is_empty() => reader.end(),
        Poll::Ready(Ok(())) => reader.feed(buf.filled()),
    };
    Poll::Ready(fed.map(drop).map_err(ExchangeError::Answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<ExchangeError> {
        let io = |k| io::Error::from(k);
        let mut all = vec![
            ExchangeError::NoAddress,
            ExchangeError::Connect(ConnectError::Refused(io(io::ErrorKind::ConnectionRefused))),
            ExchangeError::Connect(ConnectError::Timeout),
            ExchangeError::Connect(ConnectError::Tls(io(io::ErrorKind::InvalidData))),
            ExchangeError::Connect(ConnectError::TlsTimeout),
            ExchangeError::WriteTimeout,
            ExchangeError::Write(io(io::ErrorKind::BrokenPipe)),
            ExchangeError::ReadTimeout { head: false },
            ExchangeError::ReadTimeout { head: true },
            ExchangeError::Read {
                error: io(io::ErrorKind::UnexpectedEof),
                started: true,
            },
            ExchangeError::Read {
                error: io(io::ErrorKind::ConnectionReset),
                started: false,
            },
            ExchangeError::Read {
                error: io(io::ErrorKind::ConnectionReset),
                started: true,
            },
            ExchangeError::Build(OAuthError::request_unbuildable()),
        ];
        all.extend(ResponseError::ALL.map(ExchangeError::Answer));
        all
    }

    #[test]
    fn every_failure_has_a_cause_of_its_own() {
        let all = all();
        let causes: std::collections::HashSet<_> = all.iter().map(ExchangeError::cause).collect();
        assert_eq!(causes.len(), all.len());
        assert!(causes.iter().all(|c| c.len() < 48 && c.is_ascii()));
    }

    #[test]
    fn timeouts_are_504_and_other_upstream_failures_502() {
        for e in all() {
            let status = e.answer().status;
            let expected = match (&e, e.kind()) {
                (ExchangeError::Build(_), _) => 500,
                (_, "timeout") => 504,
                _ => 502,
            };
            assert_eq!(status, expected, "{e:?}");
            assert!(crate::metrics::UPSTREAM_ERROR_KINDS.contains(&e.kind()));
        }
    }
}
