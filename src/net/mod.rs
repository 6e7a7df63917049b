//! Sockets: the one send/receive/close path ([`socket`]), the open
//! connection record ([`conn`]) and its delivery log ([`deliveries`]), the
//! per-core registry ([`registry`]) and epoll set ([`epoll`], woken by
//! [`wakeups`]), the per-core io_uring ring the data path is moving to
//! ([`uring`]: multishot receive into a provided buffer ring, not yet
//! serving connections), and the cross-core mailbox ([`mailbox`]).

pub mod conn;
pub mod deliveries;
pub mod epoll;
#[cfg(feature = "auth")]
pub mod hook_client;
pub mod mailbox;
pub mod registry;
pub mod socket;
pub mod uring;
pub mod wakeups;
