//! The close handshake's state of one connection, one enum for every way a
//! connection ends (RFC 6455 §7).

use crate::proto::close::ServerClose;

/// Where a connection is in its close handshake (RFC 6455 §7): open, then
/// closing (our frame out, the peer's awaited until a deadline), then one
/// of the ends. The task keeps serving while [`Close::is_running`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// Open.
    Open,
    /// The core asked for a close while output was queued: the close frame
    /// goes out right behind that output.
    Wanted(ServerClose),
    /// Our close frame (this code) is out; only the peer's close matters now
    /// (§5.5.1). Its deadline runs from [`Conn::awaiting`].
    Sent(u16),
    /// The peer's close arrived first and was answered: the code it carried
    /// (1005 if none).
    Received(u16),
    /// The peer answered the close we sent with this code.
    Done(u16),
    /// We failed the connection with this code (§7.1.7).
    Failed(u16),
    /// The socket was shut down by the core or vanished: the code counted
    /// for it (1006; 1008 for a slow consumer).
    Cut(u16),
}

impl Close {
    /// Whether the connection's task still reads (and, unless closing, answers).
    pub fn is_running(self) -> bool {
        matches!(self, Close::Open | Close::Wanted(_) | Close::Sent(_))
    }

    /// Whether new output for the peer is still queued (not once a close
    /// frame is out or the socket is cut).
    pub fn accepts_output(self) -> bool {
        matches!(self, Close::Open | Close::Wanted(_))
    }

    /// The code a connection that ended in this state is counted under.
    pub fn final_code(self) -> u16 {
        match self {
            Close::Open | Close::Wanted(_) | Close::Sent(_) => 1006,
            Close::Received(c) | Close::Done(c) | Close::Failed(c) | Close::Cut(c) => c,
        }
    }

    /// A fixed word for how the connection ended (the events hook's
    /// `disconnect` `reason`): `client` (its close frame), `server` (ours,
    /// answered: drain, replaced, expired token…), `protocol_error`,
    /// `slow_consumer`, or `vanished` (no close handshake).
    pub fn reason_word(self) -> &'static str {
        match self {
            Close::Received(_) => "client",
            Close::Done(_) => "server",
            Close::Failed(_) => "protocol_error",
            Close::Cut(1008) => "slow_consumer",
            Close::Open | Close::Wanted(_) | Close::Sent(_) | Close::Cut(_) => "vanished",
        }
    }

    /// Only the client's own 1000 ends its session; any other end keeps it
    /// for a resume.
    pub fn ends_session(self) -> bool {
        self == Close::Received(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_states_say_what_the_task_does_and_how_it_is_counted() {
        let wanted = Close::Wanted(ServerClose::Draining);
        for (state, running, output, code, ends) in [
            (Close::Open, true, true, 1006, false),
            (wanted, true, true, 1006, false),
            (Close::Sent(1001), true, false, 1006, false),
            (Close::Received(1000), false, false, 1000, true),
            (Close::Received(1001), false, false, 1001, false),
            // We started it: the client's 1000 answers ours, the session lives on.
            (Close::Done(1008), false, false, 1008, false),
            (Close::Failed(1002), false, false, 1002, false),
            (Close::Cut(1008), false, false, 1008, false),
        ] {
            assert_eq!(state.is_running(), running, "{state:?}");
            assert_eq!(state.accepts_output(), output, "{state:?}");
            assert_eq!(state.final_code(), code, "{state:?}");
            assert_eq!(state.ends_session(), ends, "{state:?}");
        }
    }
}
