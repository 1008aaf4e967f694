//! Bounds on the router's public connections (HTTPS and the plain HTTP challenge port): how many
//! may be open at once, and how long a client may take to say what it wants.
//!
//! - At most `--max-connections` connections, both ports together; one over the limit is closed
//!   at once (counted in `p2pcamera_router_connections_refused_total`), before any TLS work.
//! - The TLS handshake, and then each request's headers (also the wait for the next request on
//!   a kept-alive connection), must complete within `--header-timeout`, or the connection is
//!   closed: a client that trickles its handshake or headers holds a connection that long at most.
//! - A request body must arrive within `--request-timeout` (see the offer handler); HTTP/2
//!   connections carry at most [`MAX_STREAMS_PER_CONNECTION`] requests at a time.

use std::future::{Ready, ready};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::Server;
use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::metrics::Metrics;

/// Default of `--max-connections`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 4096;
/// Concurrent requests on one HTTP/2 connection (a browser sends one offer at a time).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 32;

/// An acceptor that admits a connection only while fewer than the limit are open.
#[derive(Clone)]
pub struct ConnectionLimit {
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
}

impl ConnectionLimit {
    pub fn new(max_connections: u32, metrics: Arc<Metrics>) -> Self {
        let max_connections = usize::try_from(max_connections).unwrap_or(Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS))),
            metrics,
        }
    }
}

impl<I, S> Accept<I, S> for ConnectionLimit {
    type Stream = Admitted<I>;
    type Service = S;
    type Future = Ready<io::Result<(Admitted<I>, S)>>;

    fn accept(&self, stream: I, service: S) -> Self::Future {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                self.metrics.connections_open.inc();
                ready(Ok((
                    Admitted {
                        stream,
                        _permit: permit,
                        metrics: self.metrics.clone(),
                    },
                    service,
                )))
            }
            Err(_) => {
                self.metrics.connections_refused.inc();
                ready(Err(io::Error::other("connection limit reached")))
            }
        }
    }
}

/// An admitted connection: holds its place under the limit until it is dropped.
pub struct Admitted<I> {
    stream: I,
    _permit: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl<I> Drop for Admitted<I> {
    fn drop(&mut self) {
        self.metrics.connections_open.dec();
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Admitted<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Admitted<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A server on `listener` whose connections go through `acceptor` (which should include a
/// [`ConnectionLimit`]) and must send each request's headers within `header_timeout`.
pub fn bounded_server<A>(
    listener: std::net::TcpListener,
    acceptor: A,
    header_timeout: Duration,
) -> io::Result<Server<SocketAddr, A>> {
    let mut server = axum_server::from_tcp(listener)?
        .acceptor(acceptor)
        .first_request_timeout(header_timeout);
    let builder = server.http_builder();
    builder.http1().header_read_timeout(header_timeout);
    builder
        .http2()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .keep_alive_interval(header_timeout)
        .keep_alive_timeout(header_timeout);
    Ok(server)
}
