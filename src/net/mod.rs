//! Sockets: the one send/receive/close path ([`socket`]), the open
//! connection record ([`conn`]) and its delivery log ([`deliveries`]), the
//! per-core registry ([`registry`]), the data path of open connections
//! ([`reactor`]: an io_uring ring, [`uring`] on [`ring`], or an epoll set,
//! [`epoll`]; parked connections woken by [`wakeups`]), and the cross-core
//! mailbox ([`mailbox`]); a Redis connection's byte stream, plain or TLS
//! ([`redis_stream`], [`redis_tls`]).

pub mod conn;
pub mod deliveries;
pub mod epoll;
#[cfg(any(feature = "auth", feature = "backend"))]
pub mod hook_client;
pub mod mailbox;
pub mod reactor;
pub mod redis_stream;
#[cfg(feature = "redis-tls")]
pub mod redis_tls;
pub mod registry;
pub mod ring;
pub mod socket;
pub mod uring;
pub mod wakeups;
