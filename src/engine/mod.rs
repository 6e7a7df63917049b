//! The shared engine (Redis, `--redis`, DESIGN §10) without its socket: the
//! schema of keys and scripts ([`schema`], [`scripts`]) and the per-core
//! request pipeline ([`queue`]); where the primary is with Sentinel
//! ([`sentinel`]); Redis Cluster's slots and redirects ([`slot`],
//! [`cluster`]). Commands out, replies in; the connection itself is
//! `serve/redis.rs`.

pub mod cluster;
pub mod queue;
pub mod schema;
pub mod scripts;
pub mod sentinel;
pub mod slot;
