//! The serving layer: one task kind per file. A connection's bytes arrive in
//! [`handshake`] (up to the 101), then [`websocket`] (its task) and
//! [`frames`] (read, parse, answer), woken by [`reactor`]; [`mailbox`]
//! serves cross-core mail, [`heartbeat`] pings and expires, [`drain`] is
//! SIGTERM, [`admin`] the admin port, [`redis`] the shared engine's socket,
//! [`events`] the events hook's requests.

pub mod admin;
pub mod drain;
#[cfg(feature = "backend")]
pub mod events;
pub mod frames;
pub mod handshake;
pub mod heartbeat;
pub mod mailbox;
pub mod reactor;
pub mod redis;
pub mod redis_cluster;
pub mod redis_lane;
pub mod redis_sentinel;
pub mod websocket;
