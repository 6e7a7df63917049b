//! Reference echo server on fastwebsockets, using its own hyper-based upgrade
//! (`fastwebsockets::upgrade`) on a tokio current_thread runtime (one worker),
//! shaped like the crate's `examples/echo_server.rs`.
//!
//! Out of the box fastwebsockets writes every frame with its own `write`
//! system call. To give it the same treatment as tokio-tungstenite's
//! feed-then-flush, the upgraded stream is wrapped in [`FlushOnIdle`], which
//! collects writes and sends them when the next read finds nothing to read,
//! so the replies to one read leave together. `--unbatched` runs it exactly as
//! the upstream example does.

#[path = "../common.rs"]
#[allow(dead_code)] // the load generators' half
mod common;

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use fastwebsockets::{upgrade, FragmentCollector, OpCode, Role, WebSocket, WebSocketError};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;

fn main() {
    let (listen, rest) = common::parse_listen();
    let mut batched = true;
    for a in &rest {
        match a.as_str() {
            "--unbatched" => batched = false,
            other => common::die(&format!("unknown argument {other}")),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await.unwrap();
        common::announce("fastwebsockets", listener.local_addr().unwrap());
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(_) => continue,
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let conn = http1::Builder::new()
                    .serve_connection(io, service_fn(move |req| server_upgrade(req, batched)))
                    .with_upgrades();
                let _ = conn.await;
            });
        }
    });
}

async fn server_upgrade(
    mut req: Request<Incoming>,
    batched: bool,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::task::spawn(async move {
        let result = if batched {
            match fut.await {
                Ok(ws) => {
                    let io = FlushOnIdle::new(ws.into_inner());
                    echo(WebSocket::after_handshake(io, Role::Server)).await
                }
                Err(e) => Err(e),
            }
        } else {
            match fut.await {
                Ok(ws) => echo(ws).await,
                Err(e) => Err(e),
            }
        };
        let _ = result;
    });
    Ok(response)
}

async fn echo<S>(mut ws: WebSocket<S>) -> Result<(), WebSocketError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    ws.set_max_message_size(common::MAX_MESSAGE);
    let mut ws = FragmentCollector::new(ws);
    tokio::task::unconstrained(async move {
        loop {
            let frame = ws.read_frame().await?;
            match frame.opcode {
                OpCode::Close => {
                    // read_frame already queued the automatic close reply: send it.
                    let mut io = ws.into_inner();
                    let _ = io.flush().await;
                    return Ok(());
                }
                OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
                _ => {}
            }
        }
    })
    .await
}

/// Collects writes and sends them once a read would wait (or 64 KiB piled up).
struct FlushOnIdle<S> {
    inner: S,
    out: Vec<u8>,
    sent: usize,
}

const FLUSH_AT: usize = 64 * 1024;

impl<S: AsyncWrite + Unpin> FlushOnIdle<S> {
    fn new(inner: S) -> Self {
        FlushOnIdle {
            inner,
            out: Vec::new(),
            sent: 0,
        }
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.out.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for FlushOnIdle<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => {
                if !this.out.is_empty() {
                    if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                        return Poll::Ready(Err(e));
                    }
                }
                Poll::Pending
            }
            ready => ready,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FlushOnIdle<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() >= FLUSH_AT {
            ready!(this.poll_drain(cx))?;
        }
        this.out.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.out.len() >= FLUSH_AT {
            ready!(this.poll_drain(cx))?;
        }
        let mut n = 0;
        for b in bufs {
            this.out.extend_from_slice(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
