//! The shared engine (Redis, `--redis`, DESIGN §10) without its socket: the
//! schema of keys and scripts ([`schema`], [`scripts`]) and the per-core
//! request pipeline ([`queue`]); where the primary is with Sentinel
//! ([`sentinel`]). Commands out, replies in; the connection itself is
//! `serve/redis.rs`.

pub mod queue;
pub mod schema;
pub mod scripts;
pub mod sentinel;
