//! Shared by the peers: the servers' command line and listening line, and
//! the load generators' client frames.

use std::net::SocketAddr;

/// `--listen ADDR` (default 127.0.0.1:0) from the command line; other flags are
/// returned for the server to interpret.
pub fn parse_listen() -> (SocketAddr, Vec<String>) {
    let mut listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut rest = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--listen" {
            listen = args
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| die("--listen needs an address"));
        } else {
            rest.push(a);
        }
    }
    (listen, rest)
}

/// Announces the bound address the same way wsgate does, so one harness can start all servers.
pub fn announce(name: &str, addr: SocketAddr) {
    eprintln!("server={name} event=listening listen={addr}");
}

pub fn die(msg: &str) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(2)
}

/// Largest message the servers accept: the same 16 MiB wsgate is started with.
pub const MAX_MESSAGE: usize = 16 << 20;

pub const OP_TEXT: u8 = 0x1;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A masked client frame (RFC 6455 §5.2/§5.3), FIN set.
pub fn client_frame(opcode: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}
