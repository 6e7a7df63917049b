//! The auth hook backend of `benches/auth.sh`: as small and fast as an HTTP/1.1
//! server can be, so that what is measured is the gateway's side of the call.
//!
//! `auth-hook [--listen 127.0.0.1:0] [--user ID]`: every `POST` (any path) is
//! answered `200` with the same JSON, `{"user":"<ID>","sub":[],"pub":[]}`
//! (default ID: `user-000000000000000`, 20 bytes like the tokens' users),
//! on the same keep-alive connection; the request body (the gateway's JSON)
//! is read by its `Content-Length` and not parsed. `GET /count` answers the
//! number of `POST`s so far (the harness checks that the gateway really
//! called the hook once per upgrade), `GET /conns` the number of connections
//! accepted (the gateway keeps its connections to the hook alive). One tokio `current_thread` runtime;
//! prints `server=auth-hook event=listening listen=ADDR` on stderr.

#[path = "../common.rs"]
#[allow(dead_code)]
mod common;

use std::cell::Cell;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() {
    let (listen, rest) = common::parse_listen();
    let mut user = "user-000000000000000".to_string();
    let mut it = rest.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--user" => {
                user = it
                    .next()
                    .unwrap_or_else(|| common::die("--user needs a value"))
            }
            _ => common::die(&format!(
                "unexpected argument {a:?}\nusage: auth-hook [--listen ADDR] [--user ID]"
            )),
        }
    }
    let body = format!(r#"{{"user":"{user}","sub":[],"pub":[]}}"#);
    let answer: Rc<[u8]> = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
    .into();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let listener = TcpListener::bind(listen)
            .await
            .unwrap_or_else(|e| common::die(&format!("bind {listen}: {e}")));
        common::announce("auth-hook", listener.local_addr().unwrap());
        let count = Rc::new(Counts::default());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            count.conns.set(count.conns.get() + 1);
            let _ = stream.set_nodelay(true);
            let (answer, count) = (answer.clone(), count.clone());
            tokio::task::spawn_local(async move {
                if let Err(e) = serve(stream, &answer, &count).await {
                    eprintln!("server=auth-hook event=conn_error error={e:?}");
                }
            });
        }
    });
}

#[derive(Default)]
struct Counts {
    /// `POST`s answered.
    posts: Cell<u64>,
    /// Connections accepted.
    conns: Cell<u64>,
}

/// Answers the requests of one connection (pipelined ones too) until it closes.
async fn serve(mut stream: TcpStream, answer: &[u8], count: &Counts) -> Result<(), String> {
    let mut buf: Vec<u8> = Vec::with_capacity(8 * 1024);
    let mut out: Vec<u8> = Vec::with_capacity(4 * 1024);
    let mut tmp = vec![0u8; 16 * 1024];
    loop {
        // Every complete request in the buffer is answered, then one write.
        let mut start = 0;
        while let Some((len, kind)) = request_len(&buf[start..])? {
            start += len;
            if kind == Kind::Post {
                count.posts.set(count.posts.get() + 1);
                out.extend_from_slice(answer);
            } else {
                let n = match kind {
                    Kind::Conns => count.conns.get(),
                    _ => count.posts.get(),
                }
                .to_string();
                out.extend_from_slice(
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{n}", n.len()).as_bytes(),
                );
            }
        }
        buf.drain(..start);
        if !out.is_empty() {
            stream.write_all(&out).await.map_err(|e| e.to_string())?;
            out.clear();
        }
        let n = stream.read(&mut tmp).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// A hook call.
    Post,
    /// `GET /conns`: connections accepted so far.
    Conns,
    /// Any other `GET`: `POST`s answered so far.
    Count,
}

/// The length of the first request in `buf` (head and body) and what it is,
/// or `None` while it is incomplete.
fn request_len(buf: &[u8]) -> Result<Option<(usize, Kind)>, String> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err("request head over 64 KiB".into());
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| "head is not UTF-8")?;
    let mut body = 0usize;
    for line in head.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                body = value.trim().parse().map_err(|_| "bad Content-Length")?;
            }
        }
    }
    let total = end + 4 + body;
    if buf.len() < total {
        return Ok(None);
    }
    let kind = if head.starts_with("POST ") {
        Kind::Post
    } else if head.starts_with("GET /conns ") {
        Kind::Conns
    } else {
        Kind::Count
    };
    Ok(Some((total, kind)))
}
