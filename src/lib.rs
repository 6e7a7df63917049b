//! wsgate: a WebSocket gateway for fleets behind an L7 load balancer.
//!
//! # Layout
//!
//! - [`proto`]: the sans-IO protocol core. HTTP request heads
//!   ([`proto::http`]), the opening handshake and routing
//!   ([`proto::handshake`]), the sticky cookie ([`proto::cookie`]), the frame
//!   wire format ([`proto::frame`]), masking ([`proto::mask`]), UTF-8
//!   ([`proto::utf8`]), close codes and protocol errors ([`proto::close`]) and
//!   the read-side state machine ([`proto::receiver`]). No I/O, no clock.
//! - [`config`]: flags and environment; [`main`](../wsgate/index.html) only
//!   parses them and calls [`server::run`].
//! - [`server`]: one pinned monoio runtime per CPU and its accept loop.
//! - [`connection`]: the only socket code of a client connection.
//! - [`conns`]: the per-core registry of open connections; [`heartbeat`]:
//!   pings and dead-peer cuts; [`shutdown`]: SIGTERM and the drain.
//! - [`hub`]: sessions and topics of one core (sans-IO); [`gateway`] and
//!   [`mailbox`] wire it to sockets and to the other cores.
//! - [`store`]: the shared engine's schema in Redis (keys, scripts);
//!   [`redis`]: each core's connection to it; [`proto::resp`]: RESP3.
//! - [`admin`]: the admin listener; [`metrics`]: per-core counters.
//! - [`log`]: `key=value` log lines; [`sys`]: the raw system calls.

pub mod admin;
pub mod config;
pub mod connection;
pub mod conns;
pub mod gateway;
pub mod heartbeat;
pub mod hub;
pub mod log;
pub mod mailbox;
pub mod metrics;
pub mod proto;
pub mod reactor;
pub mod redis;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod sys;
pub mod websocket;
