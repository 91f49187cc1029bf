//! Limits on a daemon's Unix-socket server, so that no local client can stall
//! it: a client that connects and never speaks, one that opens connections by
//! the hundred, one that sends a huge message.
//!
//! - [`Incoming`] replaces `UnixListenerStream`: it counts open connections per
//!   peer uid (SO_PEERCRED) and closes new ones over the limit at once, so the
//!   daemon never runs out of file descriptors; privileged peers (root, the
//!   controld user) draw from a pool of their own, so a flood from an ordinary
//!   user never locks controld out. Each connection must send the HTTP/2
//!   preface within [`Limits::handshake_timeout`] and, with
//!   [`Limits::idle_timeout`], must send something at least that often.
//! - [`server_builder`] sets HTTP/2 keepalive pings (a live client answers
//!   them, so the idle timeout only ends dead or hostile clients), a cap on
//!   streams per connection and on header size.
//! - [`Limits::max_message_bytes`] is for the generated servers'
//!   `max_decoding_message_size` (tonic's default is 4 MiB).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::time::Sleep;
use tokio_stream::Stream;
use tonic::transport::server::{Connected, UdsConnectInfo};

use super::PeerGate;

/// Length of the HTTP/2 client connection preface (`PRI * HTTP/2.0...`).
const PREFACE_LEN: u64 = 24;
/// Pause after a failed accept (EMFILE, ENFILE), so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// At most one "refused" log line per this long (with a count of the rest).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// How much one server lets its clients hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once from unprivileged peers, all uids together.
    pub max_connections: usize,
    /// Connections open at once from any one unprivileged uid.
    pub max_per_uid: usize,
    /// Connections open at once from privileged peers (root, the controld
    /// user); a pool of their own.
    pub max_privileged: usize,
    /// A connection that has not sent the HTTP/2 preface by then is closed.
    pub handshake_timeout: Duration,
    /// A connection that sends nothing for this long is closed. Needs the
    /// keepalive pings of [`server_builder`]: a live but quiet client (a Sync
    /// stream between snapshots) answers them and so is never idle this long.
    pub idle_timeout: Option<Duration>,
    /// HTTP/2 PING interval on a quiet connection, and how long the answer may take.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// Concurrent requests (HTTP/2 streams) per connection.
    pub max_concurrent_streams: u32,
    /// Size of a request's headers.
    pub max_header_list_bytes: u32,
    /// Largest request message the server decodes (for
    /// `XServer::max_decoding_message_size`); bigger ones are refused with
    /// RESOURCE_EXHAUSTED before any handler runs.
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 64,
            max_per_uid: 16,
            max_privileged: 64,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(60)),
            keepalive_interval: Duration::from_secs(20),
            keepalive_timeout: Duration::from_secs(10),
            max_concurrent_streams: 32,
            max_header_list_bytes: 16 * 1024,
            max_message_bytes: 4 * 1024 * 1024,
        }
    }
}

/// A tonic server builder with [`Limits`]' HTTP/2 settings: keepalive pings,
/// streams per connection, header size.
pub fn server_builder(limits: &Limits) -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(limits.keepalive_interval))
        .http2_keepalive_timeout(Some(limits.keepalive_timeout))
        .max_concurrent_streams(limits.max_concurrent_streams)
        .http2_max_header_list_size(limits.max_header_list_bytes)
}

/// Why a new connection was closed at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    PerUid { uid: u32, open: usize, limit: usize },
    Unprivileged { open: usize, limit: usize },
    Privileged { open: usize, limit: usize },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::PerUid { uid, open, limit } => write!(
                f,
                "uid {uid} already holds {open} connections (limit {limit})"
            ),
            Refusal::Unprivileged { open, limit } => write!(
                f,
                "{open} connections from unprivileged users are open (limit {limit})"
            ),
            Refusal::Privileged { open, limit } => write!(
                f,
                "{open} connections from privileged users are open (limit {limit})"
            ),
        }
    }
}

/// Open connections by uid; pure bookkeeping.
#[derive(Debug, Default)]
pub struct Pool {
    per_uid: HashMap<u32, usize>,
    unprivileged: usize,
    privileged: usize,
}

impl Pool {
    /// Takes a slot for a peer, or says why not.
    pub fn admit(&mut self, uid: u32, privileged: bool, l: &Limits) -> Result<(), Refusal> {
        if privileged {
            if self.privileged >= l.max_privileged {
                return Err(Refusal::Privileged {
                    open: self.privileged,
                    limit: l.max_privileged,
                });
            }
            self.privileged += 1;
        } else {
            let open = self.per_uid.get(&uid).copied().unwrap_or(0);
            if open >= l.max_per_uid {
                return Err(Refusal::PerUid {
                    uid,
                    open,
                    limit: l.max_per_uid,
                });
            }
            if self.unprivileged >= l.max_connections {
                return Err(Refusal::Unprivileged {
                    open: self.unprivileged,
                    limit: l.max_connections,
                });
            }
            self.unprivileged += 1;
            *self.per_uid.entry(uid).or_insert(0) += 1;
        }
        Ok(())
    }

    /// Gives back a slot taken by [`Pool::admit`].
    pub fn release(&mut self, uid: u32, privileged: bool) {
        if privileged {
            self.privileged = self.privileged.saturating_sub(1);
        } else {
            self.unprivileged = self.unprivileged.saturating_sub(1);
            if let Some(n) = self.per_uid.get_mut(&uid) {
                *n -= 1;
                if *n == 0 {
                    self.per_uid.remove(&uid);
                }
            }
        }
    }

    /// Connections open now (privileged and not).
    pub fn open(&self) -> usize {
        self.privileged + self.unprivileged
    }
}

/// A slot in the pool, given back when the connection is dropped.
struct Slot {
    pool: Arc<Mutex<Pool>>,
    uid: u32,
    privileged: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut p) = self.pool.lock() {
            p.release(self.uid, self.privileged);
        }
    }
}

/// The accepted connections of a listener, within [`Limits`]. Use in place of
/// `UnixListenerStream::new(listener)` in `serve_with_incoming(_shutdown)`.
pub struct Incoming {
    listener: UnixListener,
    limits: Limits,
    gate: PeerGate,
    pool: Arc<Mutex<Pool>>,
    retry: Option<Pin<Box<Sleep>>>,
    refused_since_log: u64,
    last_refusal_log: Option<Instant>,
}

impl Incoming {
    /// `gate` says which peers are privileged (their own pool of connections).
    pub fn new(listener: UnixListener, limits: Limits, gate: PeerGate) -> Self {
        Incoming {
            listener,
            limits,
            gate,
            pool: Arc::new(Mutex::new(Pool::default())),
            retry: None,
            refused_since_log: 0,
            last_refusal_log: None,
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.pool.lock().map_or(0, |p| p.open())
    }

    fn refused(&mut self, why: Refusal) {
        self.refused_since_log += 1;
        let due = self
            .last_refusal_log
            .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY);
        if due {
            tracing::warn!(reason = %why, refused = self.refused_since_log,
                "closing a new client connection: over the connection limit");
            self.refused_since_log = 0;
            self.last_refusal_log = Some(Instant::now());
        }
    }
}

impl Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(r) = &mut this.retry {
                if r.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.retry = None;
            }
            let stream = match this.listener.poll_accept(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok((s, _))) => s,
                Poll::Ready(Err(e)) => {
                    tracing::warn!(error = %e, "accept failed; retrying shortly");
                    this.retry = Some(Box::pin(tokio::time::sleep(ACCEPT_RETRY)));
                    continue;
                }
            };
            // No credentials: treat as the least trusted peer there is.
            let uid = stream.peer_cred().map_or(u32::MAX, |c| c.uid());
            let privileged = uid != u32::MAX && this.gate.allows(uid);
            let admitted = match this.pool.lock() {
                Ok(mut p) => p.admit(uid, privileged, &this.limits),
                Err(_) => Ok(()),
            };
            match admitted {
                Ok(()) => {
                    let slot = Slot {
                        pool: this.pool.clone(),
                        uid,
                        privileged,
                    };
                    return Poll::Ready(Some(Ok(Conn::new(stream, slot, &this.limits))));
                }
                Err(why) => {
                    drop(stream);
                    this.refused(why);
                }
            }
        }
    }
}

/// One accepted connection: the socket, its slot, and the deadline by which
/// it must send something.
pub struct Conn {
    io: UnixStream,
    _slot: Slot,
    read: u64,
    handshake_timeout: Duration,
    idle_timeout: Option<Duration>,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl Conn {
    fn new(io: UnixStream, slot: Slot, l: &Limits) -> Self {
        Conn {
            io,
            _slot: slot,
            read: 0,
            handshake_timeout: l.handshake_timeout,
            idle_timeout: l.idle_timeout,
            deadline: Some(Box::pin(tokio::time::sleep(l.handshake_timeout))),
        }
    }

    /// After bytes came in: past the preface, the deadline becomes the idle
    /// timeout from now (or none).
    fn rearm(&mut self) {
        if self.read < PREFACE_LEN {
            return;
        }
        match (self.idle_timeout, &mut self.deadline) {
            (Some(idle), Some(d)) => d.as_mut().reset(tokio::time::Instant::now() + idle),
            (Some(idle), None) => self.deadline = Some(Box::pin(tokio::time::sleep(idle))),
            (None, _) => self.deadline = None,
        }
    }

    fn timed_out(&self) -> io::Error {
        let uid = self.io.peer_cred().map_or(u32::MAX, |c| c.uid());
        let (what, after) = if self.read < PREFACE_LEN {
            ("sent no HTTP/2 preface", self.handshake_timeout)
        } else {
            ("sent nothing", self.idle_timeout.unwrap_or_default())
        };
        tracing::info!(
            uid,
            after_ms = after.as_millis() as u64,
            "closing a client connection that {what}"
        );
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("client (uid {uid}) {what} within {after:?}"),
        )
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                if n > 0 {
                    this.read += n;
                    this.rearm();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let Some(d) = &mut this.deadline {
                    if d.as_mut().poll(cx).is_ready() {
                        this.deadline = None;
                        return Poll::Ready(Err(this.timed_out()));
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl Connected for Conn {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Limits {
        Limits {
            max_connections: 3,
            max_per_uid: 2,
            max_privileged: 2,
            ..Limits::default()
        }
    }

    #[test]
    fn per_uid_total_and_privileged_pools() {
        let l = small();
        let mut p = Pool::default();
        assert_eq!(p.admit(1000, false, &l), Ok(()));
        assert_eq!(p.admit(1000, false, &l), Ok(()));
        assert_eq!(
            p.admit(1000, false, &l),
            Err(Refusal::PerUid {
                uid: 1000,
                open: 2,
                limit: 2
            })
        );
        assert_eq!(p.admit(1001, false, &l), Ok(()));
        assert_eq!(
            p.admit(1002, false, &l),
            Err(Refusal::Unprivileged { open: 3, limit: 3 })
        );
        // A flood of ordinary users leaves root's pool alone.
        assert_eq!(p.admit(0, true, &l), Ok(()));
        assert_eq!(p.admit(0, true, &l), Ok(()));
        assert!(matches!(
            p.admit(0, true, &l),
            Err(Refusal::Privileged { .. })
        ));
        assert_eq!(p.open(), 5);
        p.release(1000, false);
        assert_eq!(p.admit(1002, false, &l), Ok(()));
        p.release(0, true);
        assert_eq!(p.admit(0, true, &l), Ok(()));
        assert!(Refusal::PerUid {
            uid: 7,
            open: 2,
            limit: 2
        }
        .to_string()
        .contains("uid 7"));
    }
}
