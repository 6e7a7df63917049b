//! The task that serves a core's mailbox: hub messages from other cores,
//! and connections handed over to the core that owns their session.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::rc::Rc;

use monoio::net::UnixStream;

use super::handshake;
use crate::core::Core;
use crate::net::mailbox::CoreMsg;
use crate::sys;

/// Serves this core's mailbox forever; `bell` rings when mail arrives.
pub async fn run(core: Rc<Core>, bell: StdUnixStream) {
    let Ok(bell) = UnixStream::from_std(bell) else {
        return;
    };
    let mut scratch = [0u8; 64];
    loop {
        if bell.readable(false).await.is_err() {
            return;
        }
        // Drain the doorbell first: a ring after this point means new mail.
        while matches!(sys::recv(bell.as_raw_fd(), &mut scratch), Ok(n) if n > 0) {}
        let mail = core.shared.mailboxes[core.index].take();
        let now = core.tick();
        core.with_hub(|hub| {
            // Mail carries no time: what it causes (a topic left without
            // members, say) happens now.
            hub.advance(now);
            for msg in mail {
                match msg {
                    CoreMsg::Hub(msg) => hub.receive(msg),
                    CoreMsg::Adopt(adoption) => {
                        monoio::spawn(handshake::adopt(adoption, core.clone()));
                    }
                }
            }
        });
    }
}
