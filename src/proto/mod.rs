//! The sans-IO protocol core: bytes in, decisions and bytes out. Nothing in
//! here touches a socket, a clock or the runtime, so all of it is unit-tested
//! and fuzzable on its own.

pub mod close;
pub mod command;
pub mod cookie;
#[cfg(feature = "compression")]
pub mod deflate;
pub mod extensions;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod http_client;
pub mod mask;
pub mod peer;
pub mod receiver;
pub mod resp;
pub mod utf8;
