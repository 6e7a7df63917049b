//! The admin listener (`--admin-listen`): Prometheus metrics. It is never
//! exposed to the load balancer; requests are small and rare, so each is
//! served with a plain read loop and closed.

use std::sync::Arc;
use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

use crate::proto::http::{parse_request, write_response, HeadError, MAX_HEAD};
use crate::server::Shared;

const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts admin connections forever.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                monoio::spawn(handle(stream, shared.clone()));
            }
            Err(_) => monoio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn handle(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut head: Vec<u8> = Vec::with_capacity(1024);
    let response = loop {
        let buf = Vec::with_capacity(4096);
        // The connection is dropped on timeout, so losing an in-flight read is harmless.
        let (res, buf) = match monoio::time::timeout(ADMIN_TIMEOUT, stream.read(buf)).await {
            Ok(r) => r,
            Err(_) => return,
        };
        match res {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        match parse_request(&head) {
            Ok(None) if head.len() < MAX_HEAD => continue,
            Ok(None) | Err(HeadError::TooLarge) => break respond(431, "request head too large\n"),
            Err(HeadError::Malformed(why)) => break respond(400, why),
            Ok(Some((req, _))) => break route(req.method, req.path, &shared),
        }
    };
    let _ = monoio::time::timeout(ADMIN_TIMEOUT, stream.write_all(response)).await;
    let _ = stream.shutdown().await;
}

fn route(method: &str, path: &str, shared: &Shared) -> Vec<u8> {
    match (method, path) {
        ("GET", "/metrics") => {
            let body = shared.metrics.render(
                &shared.node_id,
                shared.draining.load(std::sync::atomic::Ordering::Relaxed),
            );
            let mut out = Vec::with_capacity(body.len() + 200);
            write_response(&mut out, 200, &[], &body);
            out
        }
        (_, "/metrics") => respond(405, "method not allowed\n"),
        _ => respond(404, "not found\n"),
    }
}

fn respond(status: u16, body: &str) -> Vec<u8> {
    let mut out = Vec::new();
    write_response(&mut out, status, &[], body);
    out
}
