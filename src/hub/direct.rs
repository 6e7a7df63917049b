//! Messages from the backend to one session, or to every session of a user
//! (DESIGN §12: `POST /send/session/<id>`, `POST /send/user/<user>`).
//!
//! Each session numbers its direct messages and keeps the last
//! `--history-size` of them, so a client that was away gets what it missed
//! on resume, in order and after its topics' replay; what the kept ones no
//! longer cover is reported as `gap direct <from> <to>`. The session's
//! owner core does all of it; a request for a user asks every core.
//!
//! With the shared engine (`--redis`), a request on any node reaches the
//! session wherever it is: the engine knows the node that owns it and
//! forwards the message on that node's channel (a user's on the channel
//! every node listens to); each node that gets it answers the asking node
//! with its count, gathered by its first core. The numbering and the kept
//! messages are the engine's (the owner core asks it before it delivers),
//! so they move with the session; a session whose node is gone keeps the
//! message in the engine for its resume elsewhere. While the engine is
//! away, everything is as on one node.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::engine::{ClaimedDirects, DirectWait, EngineOp, EngineReply, Wait};
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

/// What one core (or one node) did with a direct message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectCount {
    /// Sent to a connected client.
    pub delivered: u64,
    /// Kept for a disconnected session that may still resume.
    pub held: u64,
}

impl DirectCount {
    pub(super) fn add(&mut self, other: DirectCount) {
        self.delivered += other.delivered;
        self.held += other.held;
    }
}

/// Who waits for a core's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectReply {
    /// An admin-API request on core `.0`, by request number.
    Admin(usize, u64),
    /// A forwarded request gathered on core `.0` (see [`Relay`]).
    Relay(usize, u64),
}

/// A direct message or an answer that came through the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectPush {
    /// A request of process `origin` (admin request `request` on its core
    /// `core`) for the sessions of `target` this node holds.
    Request {
        origin: Arc<str>,
        core: usize,
        request: u64,
        target: DirectTarget,
        payload: Arc<[u8]>,
        binary: bool,
    },
    /// A node's count for admin request `request` of this node's `core`.
    Answer {
        core: usize,
        request: u64,
        count: DirectCount,
    },
}

/// A forwarded request on this node: the cores asked, and their sum.
#[derive(Debug)]
pub(super) struct Relay {
    origin: Arc<str>,
    core: usize,
    request: u64,
    remaining: usize,
    count: DirectCount,
}

/// A core's direct message to several sessions waiting for the engine's
/// numbers before it can count.
#[derive(Debug)]
pub(super) struct Numbering {
    reply: DirectReply,
    remaining: usize,
    count: DirectCount,
}

/// The direct-message state of a hub besides the sessions' own.
#[derive(Debug, Default)]
pub(super) struct DirectBook {
    /// Forwarded requests being counted (first core only).
    relays: HashMap<u64, Relay>,
    /// Messages waiting for the engine's numbers.
    numberings: HashMap<u64, Numbering>,
    next: u64,
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
    /// A publish-API request on this core for `target`. With the engine up,
    /// one request to it; else mailed to the session's owner core, or to
    /// every core for a user. Returns how many answers
    /// ([`Output::AdminDirect`] with `request`) will come, before any
    /// `more` they announce.
    pub fn direct_api(
        &mut self,
        request: u64,
        target: DirectTarget,
        payload: &[u8],
        binary: bool,
    ) -> usize {
        let payload: Arc<[u8]> = payload.into();
        if self.cfg.engine && self.engine_up {
            let op = EngineOp::Route {
                target: target.clone(),
                payload: payload.clone(),
                binary,
                core: self.cfg.core,
                request,
            };
            let wait = DirectWait::Route {
                request,
                target,
                payload,
                binary,
            };
            self.ask(Wait::Direct(wait), op);
            return 1;
        }
        let reply = DirectReply::Admin(self.cfg.core, request);
        let asked = self.direct_here(target, payload, binary, reply);
        self.run_local();
        asked
    }

    /// The cores that hold `target`'s sessions.
    fn direct_cores(&self, target: &DirectTarget) -> Vec<usize> {
        match target {
            DirectTarget::Session(id) => vec![id.owner(self.cfg.cores)],
            DirectTarget::User(_) => (0..self.cfg.cores).collect(),
        }
    }

    /// Mails a direct message to the cores of this node that may hold
    /// `target`'s sessions; returns how many will answer `reply`.
    fn direct_here(
        &mut self,
        target: DirectTarget,
        payload: Arc<[u8]>,
        binary: bool,
        reply: DirectReply,
    ) -> usize {
        let cores = self.direct_cores(&target);
        for &core in &cores {
            let msg = Msg::Direct {
                target: target.clone(),
                payload: payload.clone(),
                binary,
                reply,
            };
            self.mail(core, msg);
        }
        cores.len()
    }

    /// The engine's answer to a request about a direct message.
    pub(super) fn direct_engine_reply(&mut self, wait: DirectWait, reply: EngineReply) {
        match wait {
            DirectWait::Route {
                request,
                target,
                payload,
                binary,
            } => {
                let answer = |count, more| Output::AdminDirect {
                    request,
                    count,
                    more,
                };
                match (reply, &target) {
                    (EngineReply::Routed(n), _) if n > 0 => {
                        let more = usize::try_from(n).unwrap_or(0);
                        self.out.push_back(answer(DirectCount::default(), more));
                    }
                    // Nobody has the session.
                    (EngineReply::Routed(-1), DirectTarget::Session(_)) => {
                        self.out.push_back(answer(DirectCount::default(), 0));
                    }
                    // Its node is gone: kept in the engine for its resume.
                    (EngineReply::Routed(0), DirectTarget::Session(session)) => {
                        let op = EngineOp::Keep {
                            session: *session,
                            payload,
                            binary,
                            floor: 0,
                        };
                        self.ask(Wait::Direct(DirectWait::Orphan { request }), op);
                    }
                    // The engine is away (or nobody listens, not even this
                    // node): this node's sessions only.
                    _ => {
                        let reply = DirectReply::Admin(self.cfg.core, request);
                        let more = self.direct_here(target, payload, binary, reply);
                        self.out.push_back(answer(DirectCount::default(), more));
                    }
                }
            }
            DirectWait::Orphan { request } => {
                let held = u64::from(matches!(reply, EngineReply::Kept(_)));
                let count = DirectCount { delivered: 0, held };
                self.out.push_back(Output::AdminDirect {
                    request,
                    count,
                    more: 0,
                });
            }
            DirectWait::Keep {
                session,
                payload,
                binary,
                numbering,
            } => {
                let done = match reply {
                    EngineReply::Kept(seq) => self.direct_numbered(session, seq, &payload, binary),
                    // The engine is away: numbered here, above its last.
                    _ => self.direct_to(session, &payload, binary),
                };
                let Some(n) = self.book.numberings.get_mut(&numbering) else {
                    return;
                };
                n.count.add(count_of(done));
                n.remaining -= 1;
                if n.remaining == 0 {
                    let n = self.book.numberings.remove(&numbering).expect("listed");
                    self.direct_done(n.reply, n.count);
                }
            }
        }
    }

    /// A direct message or an answer that came through the engine (on
    /// this node's first core).
    pub fn engine_direct(&mut self, push: DirectPush, now: u64) {
        self.clock = self.clock.max(now);
        match push {
            DirectPush::Request {
                origin,
                core,
                request,
                target,
                payload,
                binary,
            } => {
                self.book.next += 1;
                let id = self.book.next;
                let remaining = self.direct_cores(&target).len();
                let relay = Relay {
                    origin,
                    core,
                    request,
                    remaining,
                    count: DirectCount::default(),
                };
                self.book.relays.insert(id, relay);
                let reply = DirectReply::Relay(self.cfg.core, id);
                self.direct_here(target, payload, binary, reply);
            }
            DirectPush::Answer {
                core,
                request,
                count,
            } if core < self.cfg.cores => {
                let reply = DirectReply::Admin(core, request);
                self.mail(core, Msg::DirectDone { reply, count });
            }
            DirectPush::Answer { .. } => {}
        }
        self.run_local();
    }

    /// A direct message for the sessions of `target` this core holds.
    pub(super) fn on_direct(
        &mut self,
        target: DirectTarget,
        payload: Arc<[u8]>,
        binary: bool,
        reply: DirectReply,
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
        if self.cfg.engine && self.engine_up && !ids.is_empty() {
            // The engine numbers and keeps it, so both move with the session.
            self.book.next += 1;
            let numbering = self.book.next;
            let n = Numbering {
                reply,
                remaining: ids.len(),
                count: DirectCount::default(),
            };
            self.book.numberings.insert(numbering, n);
            for session in ids {
                let floor = self.directs.get(&session).map_or(0, |d| d.seq);
                let op = EngineOp::Keep {
                    session,
                    payload: payload.clone(),
                    binary,
                    floor,
                };
                let wait = DirectWait::Keep {
                    session,
                    payload: payload.clone(),
                    binary,
                    numbering,
                };
                self.ask(Wait::Direct(wait), op);
            }
            return;
        }
        let mut count = DirectCount::default();
        for id in ids {
            count.add(count_of(self.direct_to(id, &payload, binary)));
        }
        self.direct_done(reply, count);
    }

    /// Sends a core's count to whoever waits for it.
    fn direct_done(&mut self, reply: DirectReply, count: DirectCount) {
        let core = match reply {
            DirectReply::Admin(core, _) | DirectReply::Relay(core, _) => core,
        };
        self.mail(core, Msg::DirectDone { reply, count });
    }

    /// Numbers (here), keeps and (if its client is there) sends one direct
    /// message to `session`: `Some(true)` sent, `Some(false)` kept for a
    /// resume, `None` neither (no history kept: `--history-size 0`).
    fn direct_to(&mut self, session: SessionId, payload: &Arc<[u8]>, binary: bool) -> Option<bool> {
        if !self.sessions.contains_key(&session) {
            return None;
        }
        let seq = self.directs.get(&session).map_or(0, |d| d.seq) + 1;
        self.direct_numbered(session, seq, payload, binary)
    }

    /// Keeps and (if its client is there) sends direct message `seq` to
    /// `session`, as [`Hub::direct_to`]. A session gone meanwhile has it
    /// kept in the engine only (`Some(false)`).
    fn direct_numbered(
        &mut self,
        session: SessionId,
        seq: u64,
        payload: &Arc<[u8]>,
        binary: bool,
    ) -> Option<bool> {
        let history = self.cfg.history_size;
        let Some(s) = self.sessions.get(&session) else {
            return (history > 0).then_some(false);
        };
        let conn = s.conn().filter(|_| s.loading.is_none());
        let d = self.directs.entry(session).or_default();
        d.seq = d.seq.max(seq);
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
                if let Some(s) = self.sessions.get_mut(&session) {
                    s.dirty = true;
                }
                let frame = direct_frame(payload, binary);
                let tag = self.direct_tag.clone();
                self.deliver(conn, frame, &tag, seq);
                Some(true)
            }
            None => (history > 0).then_some(false),
        }
    }

    /// The last direct message `session`'s client got (saved with it).
    pub(super) fn directs_delivered(&self, session: SessionId) -> u64 {
        self.directs.get(&session).map_or(0, |d| d.delivered)
    }

    /// A session claimed from the engine: its direct messages there. From
    /// another node (`replace`), the engine's account of what the client
    /// got is the one; from this node, ours is at least as fresh, and only
    /// what the engine numbered beyond ours is added.
    pub(super) fn claimed_directs(&mut self, session: SessionId, c: ClaimedDirects, replace: bool) {
        if c.seq == 0 && c.kept.is_empty() {
            if replace {
                self.directs.remove(&session);
            }
            return;
        }
        let history = self.cfg.history_size;
        let d = self.directs.entry(session).or_default();
        if replace {
            d.delivered = c.delivered;
        }
        for m in c.kept {
            if m.seq > d.seq || (replace && !d.kept.iter().any(|k| k.seq == m.seq)) {
                d.kept.push_back(m);
            }
        }
        d.kept.make_contiguous().sort_by_key(|m| m.seq);
        while d.kept.len() > history {
            d.kept.pop_front();
        }
        d.seq = d.seq.max(c.seq);
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
        if let Some(s) = self.sessions.get_mut(&session) {
            s.dirty = true;
        }
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
            if let Some(s) = self.sessions.get_mut(&session) {
                s.dirty = true;
            }
        }
    }

    /// The count of one core (or node) for a request this core waits for.
    pub(super) fn on_direct_done(&mut self, reply: DirectReply, count: DirectCount) {
        match reply {
            DirectReply::Admin(_, request) => self.out.push_back(Output::AdminDirect {
                request,
                count,
                more: 0,
            }),
            DirectReply::Relay(_, id) => {
                let Some(r) = self.book.relays.get_mut(&id) else {
                    return;
                };
                r.count.add(count);
                r.remaining -= 1;
                if r.remaining == 0 {
                    let r = self.book.relays.remove(&id).expect("listed");
                    let op = EngineOp::Answer {
                        origin: r.origin,
                        core: r.core,
                        request: r.request,
                        count: r.count,
                    };
                    self.ask(Wait::Forget, op);
                }
            }
        }
    }
}

fn count_of(done: Option<bool>) -> DirectCount {
    match done {
        Some(true) => DirectCount {
            delivered: 1,
            held: 0,
        },
        Some(false) => DirectCount {
            delivered: 0,
            held: 1,
        },
        None => DirectCount::default(),
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
