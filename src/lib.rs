//! wsgate: a WebSocket gateway for fleets behind an L7 load balancer.
//!
//! # Layout
//!
//! Layers, each importing only the ones above it in this list (a test,
//! `tests/no_import_cycles.rs`, keeps it so):
//!
//! - [`sys`]: the system calls monoio does not wrap, and [`sys::log`].
//! - [`proto`]: the sans-IO protocol core: HTTP request heads, the opening
//!   handshake, the sticky cookie, frames, masking, UTF-8, close codes, the
//!   read-side state machine, the gateway commands, RESP3. No I/O, no clock.
//! - [`auth`]: topic permissions, and (feature `auth`) tokens, keys and the
//!   auth hook's messages (sans-IO).
//! - [`backend`] (feature `backend`): the events hook's messages (sans-IO).
//! - [`hub`]: sessions and topics of one core (sans-IO, time as input).
//! - [`config`] (flags) and [`metrics`] (counters): plain data.
//! - [`engine`]: the shared engine's schema in Redis and the request
//!   pipeline (sans-IO).
//! - [`net`]: sockets: the one send/close path, the open connection record,
//!   the registry, the epoll set, the cross-core mailbox.
//! - [`core`]: the per-core context and the hub driver.
//! - [`serve`]: the tasks: handshake, open WebSocket, reactor, mailbox,
//!   heartbeat, drain, admin, Redis.
//! - [`app`]: process start; [`main`](../wsgate/index.html) only parses the
//!   flags and calls [`app::run`].

pub mod app;
pub mod auth;
#[cfg(feature = "backend")]
pub mod backend;
pub mod config;
pub mod core;
pub mod engine;
pub mod hub;
pub mod metrics;
pub mod net;
pub mod proto;
pub mod serve;
pub mod sys;
