//! Messages from the backend to one session, or to every session of a user
//! (DESIGN §12: `POST /send/session/<id>`, `POST /send/user/<user>`).
//!
//! Each session numbers its direct messages and keeps the last
//! `--history-size` of them, so a client that was away gets what it missed
//! on resume, in order and after its topics' replay; what the kept ones no
//! longer cover is reported as `gap direct <from> <to>`. The session's
//! owner core does all of it; a request for a user asks every core.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{frame_of, text_frame, ConnId, Hub, Msg, Output, Stored};
use crate::proto::command;
use crate::proto::cookie::SessionId;

/// The tag that marks a delivered direct message in a connection's
/// delivery records (no topic can be named so: `!` is not a topic byte).
pub const DIRECT_TAG: &str = "!direct";

/// Whom a direct message is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectTarget {
    /// One session, by id.
    Session(SessionId),
    /// Every session of a user (authentication on).
    User(Arc<str>),
}

/// What one core did with a direct message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectCount {
    /// Sent to a connected client.
    pub delivered: u64,
    /// Kept for a disconnected session that may still resume.
    pub held: u64,
}

/// A session's direct messages (only sessions that got one have this).
#[derive(Debug, Default)]
pub(super) struct Directs {
    /// The last number given.
    seq: u64,
    /// The last number sent to the client (moved back when a socket lost it).
    delivered: u64,
    /// The kept messages, oldest first (at most `--history-size`).
    kept: VecDeque<Stored>,
    /// Resumed: sent once the topics' replay has gone out.
    after_replay: bool,
}

impl Hub {
    /// A publish-API request on this core for `target`: mailed to the
    /// session's owner core, or to every core for a user. Returns how many
    /// answers ([`Output::AdminDirect`] with `request`) will come.
    pub fn direct_api(
        &mut self,
        request: u64,
        target: DirectTarget,
        payload: &[u8],
        binary: bool,
    ) -> usize {
        let payload: Arc<[u8]> = payload.into();
        let reply = (self.cfg.core, request);
        let cores = match &target {
            DirectTarget::Session(id) => vec![id.owner(self.cfg.cores)],
            DirectTarget::User(_) => (0..self.cfg.cores).collect(),
        };
        for &core in &cores {
            let msg = Msg::Direct {
                target: target.clone(),
                payload: payload.clone(),
                binary,
                reply,
            };
            self.mail(core, msg);
        }
        self.run_local();
        cores.len()
    }

    /// A direct message for the sessions of `target` this core holds.
    pub(super) fn on_direct(
        &mut self,
        target: DirectTarget,
        payload: Arc<[u8]>,
        binary: bool,
        reply: (usize, u64),
    ) {
        let ids: Vec<SessionId> = match &target {
            DirectTarget::Session(id) => (self.sessions.get(id))
                .filter(|s| !s.placeholder)
                .map(|_| *id)
                .into_iter()
                .collect(),
            // A scan of this core's sessions: an admin request, not a hot
            // path per message (no index per session to keep up).
            DirectTarget::User(user) => (self.sessions.iter())
                .filter(|(_, s)| !s.placeholder && s.user.as_deref() == Some(&**user))
                .map(|(id, _)| *id)
                .collect(),
        };
        let mut count = DirectCount::default();
        for id in ids {
            match self.direct_to(id, &payload, binary) {
                Some(true) => count.delivered += 1,
                Some(false) => count.held += 1,
                None => {}
            }
        }
        let (core, request) = reply;
        self.mail(core, Msg::DirectDone { request, count });
    }

    /// Numbers, keeps and (if its client is there) sends one direct
    /// message to `session`: `Some(true)` sent, `Some(false)` kept for a
    /// resume, `None` neither (no history kept: `--history-size 0`).
    fn direct_to(&mut self, session: SessionId, payload: &Arc<[u8]>, binary: bool) -> Option<bool> {
        let history = self.cfg.history_size;
        let conn = (self.sessions.get(&session))
            .filter(|s| s.loading.is_none())
            .and_then(|s| s.conn);
        let d = self.directs.entry(session).or_default();
        d.seq += 1;
        let seq = d.seq;
        if history > 0 {
            d.kept.push_back(Stored {
                seq,
                payload: payload.clone(),
                binary,
            });
            while d.kept.len() > history {
                d.kept.pop_front();
            }
        }
        match conn.filter(|_| !d.after_replay) {
            Some(conn) => {
                d.delivered = seq;
                let frame = direct_frame(payload, binary);
                let tag = self.direct_tag.clone();
                self.deliver(conn, frame, &tag, seq);
                Some(true)
            }
            None => (history > 0).then_some(false),
        }
    }

    /// A resumed session's direct messages follow its topics' replay: sent
    /// now if no topic is waiting for one, else once the last has come.
    pub(super) fn resume_directs(&mut self, session: SessionId, conn: ConnId) {
        let Some(d) = self.directs.get_mut(&session) else {
            return;
        };
        let waiting = (self.sessions.get(&session)).is_some_and(|s| s.subs.any_pending());
        if waiting {
            d.after_replay = true;
        } else {
            self.flush_directs(session, conn);
        }
    }

    /// A topic's replay for `session` is out: if it was the last one its
    /// direct messages were waiting for, they go now.
    pub(super) fn replay_done(&mut self, session: SessionId, conn: ConnId) {
        let waiting = (self.sessions.get(&session)).is_some_and(|s| s.subs.any_pending());
        if !waiting && self.directs.get(&session).is_some_and(|d| d.after_replay) {
            self.flush_directs(session, conn);
        }
    }

    /// Sends what the client has not had: a `gap direct` line for what the
    /// kept messages no longer cover, then the kept ones, in order.
    fn flush_directs(&mut self, session: SessionId, conn: ConnId) {
        let tag = self.direct_tag.clone();
        let Some(d) = self.directs.get_mut(&session) else {
            return;
        };
        d.after_replay = false;
        let from = d.delivered + 1;
        if from > d.seq {
            return;
        }
        let first = d.kept.front().map_or(d.seq + 1, |m| m.seq);
        let mut frames = Vec::new();
        if first > from {
            let to = first - 1;
            frames.push((
                text_frame(|l| command::write_gap(l, "direct", from, to)),
                None,
            ));
        }
        for m in d.kept.iter().filter(|m| m.seq >= from) {
            frames.push((direct_frame(&m.payload, m.binary), Some(m.seq)));
        }
        d.delivered = d.seq;
        for (frame, seq) in frames {
            match seq {
                Some(seq) => self.deliver(conn, frame, &tag, seq),
                None => self.send(conn, frame),
            }
        }
    }

    /// The client never got direct message `seq` (nor any after it).
    pub(super) fn rewind_directs(&mut self, session: SessionId, seq: u64) {
        if let Some(d) = self.directs.get_mut(&session) {
            d.delivered = d.delivered.min(seq.saturating_sub(1));
        }
    }

    /// The answer of one core to a request of this core.
    pub(super) fn on_direct_done(&mut self, request: u64, count: DirectCount) {
        self.out.push_back(Output::AdminDirect { request, count });
    }
}

/// `direct <payload>` (text) or `direct\n<bytes>` (binary).
fn direct_frame(payload: &[u8], binary: bool) -> std::rc::Rc<[u8]> {
    let mut line = Vec::with_capacity(payload.len() + 8);
    line.extend_from_slice(b"direct");
    line.push(if binary { b'\n' } else { b' ' });
    line.extend_from_slice(payload);
    frame_of(&line, binary)
}
