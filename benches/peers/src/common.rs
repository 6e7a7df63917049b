//! Shared by the reference echo servers: command line and the listening line.

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
