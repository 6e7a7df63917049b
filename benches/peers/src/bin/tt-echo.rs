//! Reference echo server on tokio-tungstenite, written to be fair to it:
//! a current_thread runtime (one worker), an 8 KiB read buffer, TCP_NODELAY,
//! and feed-then-flush, so the replies to all messages one read produced leave
//! in one write.

#[path = "../common.rs"]
#[allow(dead_code)] // the load generators' half
mod common;

use std::future::poll_fn;
use std::task::Poll;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

fn main() {
    let (listen, rest) = common::parse_listen();
    if let Some(a) = rest.first() {
        common::die(&format!("unknown argument {a}"));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = TcpListener::bind(listen).await.unwrap();
        common::announce("tokio-tungstenite", listener.local_addr().unwrap());
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(_) => continue, // EMFILE and the like: keep serving
            };
            tokio::spawn(serve(stream));
        }
    });
}

async fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .max_message_size(Some(common::MAX_MESSAGE))
        .max_frame_size(Some(common::MAX_MESSAGE));
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    loop {
        // Wait for the next message...
        let Some(Ok(first)) = ws.next().await else {
            return;
        };
        let mut next = Some(first);
        // ...then answer it and every message already buffered or readable
        // without waiting, and flush once.
        while let Some(msg) = next.take() {
            if matches!(msg, Message::Text(_) | Message::Binary(_)) && ws.feed(msg).await.is_err() {
                return;
            }
            next = match poll_fn(|cx| match ws.poll_next_unpin(cx) {
                Poll::Ready(m) => Poll::Ready(Some(m)),
                Poll::Pending => Poll::Ready(None),
            })
            .await
            {
                Some(Some(Ok(m))) => Some(m),
                Some(_) => {
                    let _ = ws.flush().await;
                    return;
                }
                None => None,
            };
        }
        // Also sends any automatic pong or close reply tungstenite queued.
        if ws.flush().await.is_err() {
            return;
        }
    }
}
