//! Cross-core messages: a mutex-guarded queue per core plus a doorbell
//! (a socketpair) that is rung only when the queue goes from empty to
//! non-empty, so a burst of messages costs one wake-up (DESIGN §9).

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::Mutex;

use crate::hub::{Identity, Msg};
use crate::proto::cookie::SessionId;
use crate::proto::extensions::Deflate;

/// A connection handed to the core that owns its session, before its 101
/// is complete (the owner decides which session it gets, so the cookie).
#[derive(Debug)]
pub struct Adoption {
    /// The socket.
    pub fd: OwnedFd,
    /// The 101 up to its cookie, not sent yet.
    pub head: Vec<u8>,
    /// The session its cookie names.
    pub session: SessionId,
    /// Who it is, with authentication on.
    pub identity: Option<Identity>,
    /// When its token stops being accepted (seconds since the epoch; 0: never).
    pub token_deadline: u64,
    /// Whether the request carried the cookie.
    pub cookie_present: bool,
    /// The client address for logs (`X-Forwarded-For` when present).
    pub client: String,
    /// Bytes that arrived behind the request head.
    pub early: Vec<u8>,
    /// The permessage-deflate agreement (its line goes into the 101).
    pub deflate: Option<Deflate>,
}

/// What one core can send another.
#[derive(Debug)]
pub enum CoreMsg {
    /// A hub message (pub/sub, presence, replay).
    Hub(Msg),
    /// A connection to adopt.
    Adopt(Adoption),
}

/// One core's inbox.
pub struct Mailbox {
    queue: Mutex<Vec<CoreMsg>>,
    ring: StdUnixStream,
}

impl Mailbox {
    /// A mailbox whose doorbell rings through `ring` (the other end is the core's).
    pub fn new(ring: StdUnixStream) -> Mailbox {
        let _ = ring.set_nonblocking(true);
        Mailbox {
            queue: Mutex::new(Vec::new()),
            ring,
        }
    }

    /// Posts a message; rings the doorbell if the queue was empty.
    pub fn post(&self, msg: CoreMsg) {
        let was_empty = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            q.push(msg);
            q.len() == 1
        };
        if was_empty {
            // A full socket buffer means the bell is already ringing.
            let _ = (&self.ring).write(&[1]);
        }
    }

    /// Takes everything queued, in order.
    pub fn take(&self) -> Vec<CoreMsg> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
