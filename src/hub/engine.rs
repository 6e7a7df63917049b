//! The hub's side of the shared engine (`--redis`, DESIGN §10): what it asks
//! the engine, and what it does with the answers, the channel's pushes and
//! the engine's comings and goings. Still sans-IO: requests leave as
//! [`Output::Engine`], answers come back through [`Hub::engine_reply`].
//!
//! What lives in the engine, and when it is written:
//! - a session (its subscriptions and the last seq delivered per topic) is
//!   saved when it starts, on every `sub`/`unsub`, when its socket goes, at
//!   drain before its close frame, and every [`CHECKPOINT_MS`] while seqs
//!   move. A crash loses no subscription; a resume elsewhere replays from the
//!   last checkpoint, so up to a second of messages may come again (same
//!   seqs: a client drops seq ≤ the last it saw).
//! - a topic's seq and history are the engine's; each node's topic owner
//!   keeps a mirror, fed by the topic's channel, and answers subscribes and
//!   resumes from it.
//!
//! When the engine is unreachable, topics are served from the mirror with
//! node-local numbering (never below the mirror's seq, and the engine's
//! numbering continues above it afterwards), sessions resume only on the node
//! that has them, and everything syncs again when the engine is back.

use std::sync::Arc;

use super::{DirectCount, DirectTarget, Hub, Msg, Output, Reply, Stored, Sub};
use crate::hub::topic_owner;
use crate::proto::close::ServerClose;
use crate::proto::command::Command;
use crate::proto::cookie::SessionId;
use crate::proto::peer::{Member, PeerId};

/// How often changed sessions are saved (ms).
pub const CHECKPOINT_MS: u64 = 1000;

/// A request to the engine.
#[derive(Debug, Clone)]
pub enum EngineOp {
    /// Take ownership of a session and read its state, unless it belongs
    /// to another user (with auth on, `user` is the connection's).
    Claim {
        session: SessionId,
        user: Option<Arc<str>>,
    },
    /// Write a session's state (if this node still owns it); `ttl_ms` is how
    /// long the engine keeps it without another save.
    Save {
        session: SessionId,
        peer: PeerId,
        user: Option<Arc<str>>,
        subs: Vec<(Arc<str>, u64)>,
        /// The last direct message the client got.
        direct: u64,
        ttl_ms: u64,
    },
    /// Delete a session (if this node still owns it).
    End(SessionId),
    /// Number, keep and fan out a message; never numbered at or below `floor`.
    Publish {
        topic: Arc<str>,
        payload: Arc<[u8]>,
        binary: bool,
        floor: u64,
    },
    /// Subscribe this core to the topic's channel, then read seq and history;
    /// the engine's seq is raised to `floor` (what this node numbered while
    /// the engine was away), so later numbers stay above it everywhere.
    Sync { topic: Arc<str>, floor: u64 },
    /// Unsubscribe from the topic's channel.
    Unwatch(Arc<str>),
    /// Add a member and announce `join` on the channel (once per session).
    Join { topic: Arc<str>, member: Member },
    /// Remove a member and announce `leave` (once).
    Leave { topic: Arc<str>, member: Member },
    /// The topic's members.
    Who(Arc<str>),
    /// Listen for direct messages forwarded to this node and to users
    /// (the first core of each node does).
    Listen,
    /// Forward a direct message (a request of the admin API on `core`) to
    /// the node that owns the session, or to every node for a user.
    Route {
        target: DirectTarget,
        payload: Arc<[u8]>,
        binary: bool,
        core: usize,
        request: u64,
    },
    /// Number a direct message to `session` (above `floor`) and keep it in
    /// the session's history, which moves with the session.
    Keep {
        session: SessionId,
        payload: Arc<[u8]>,
        binary: bool,
        floor: u64,
    },
    /// This node's count for a forwarded direct message, to its `origin`.
    Answer {
        origin: Arc<str>,
        core: usize,
        request: u64,
        count: DirectCount,
    },
}

/// A claimed session's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// This node (this process) was its owner already.
    pub mine: bool,
    /// Subscribed topics and the last seq delivered on each.
    pub subs: Vec<(Arc<str>, u64)>,
    /// Its peer id (absent in a session saved before peer ids existed).
    pub peer: Option<PeerId>,
    /// Its direct messages.
    pub directs: ClaimedDirects,
}

/// A claimed session's direct messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimedDirects {
    /// The last one its client got.
    pub delivered: u64,
    /// The last number given.
    pub seq: u64,
    /// The kept ones, oldest first.
    pub kept: Vec<Stored>,
}

/// The engine's answer.
#[derive(Debug, Clone)]
pub enum EngineReply {
    /// Unreachable, timed out, or an error reply.
    Failed,
    /// To `Claim`: the state, or `None` for a session the engine never had.
    Claimed(Option<Claimed>),
    /// To `Claim`: the session belongs to another user (left as it was).
    Mismatch,
    /// To `Save` and `End`: whether this node owned the session.
    Owned(bool),
    /// To `Publish`: the sequence number.
    Published(u64),
    /// To `Sync`: the current seq and the history, oldest first.
    Synced { seq: u64, history: Vec<Stored> },
    /// To `Who`: how many members, and who (none above the presence cap).
    Members { count: usize, members: Vec<Member> },
    /// To `Route`: how many nodes got it (each answers); for a session,
    /// 0 when its owner is gone and -1 when the engine does not have it.
    Routed(i64),
    /// To `Keep`: the number it got.
    Kept(u64),
    /// To everything else.
    Done,
}

/// Something published on a topic's channel.
#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// A message (from any node).
    Message(Stored),
    /// `join` (true) or `leave` of a session (on any node).
    Presence { joined: bool, member: Member },
}

/// What an engine request was for.
#[derive(Debug)]
pub(super) enum Wait {
    /// Nothing waits for the answer.
    Forget,
    Claim {
        session: SessionId,
        conn: super::ConnId,
        had: bool,
    },
    Save {
        session: SessionId,
        /// A draining connection to close with 1001 once the save is done.
        drain_close: Option<super::ConnId>,
    },
    Expire(SessionId),
    Publish {
        topic: Arc<str>,
        payload: Arc<[u8]>,
        binary: bool,
        reply: Reply,
    },
    Sync(Arc<str>),
    Who {
        topic: Arc<str>,
        from: usize,
        session: SessionId,
    },
    Direct(DirectWait),
}

/// What an engine request about a direct message was for.
#[derive(Debug)]
pub(super) enum DirectWait {
    /// A `Route` of admin request `request`.
    Route {
        request: u64,
        target: DirectTarget,
        payload: Arc<[u8]>,
        binary: bool,
    },
    /// A `Keep` for a session this core holds, part of `numbering`.
    Keep {
        session: SessionId,
        payload: Arc<[u8]>,
        binary: bool,
        numbering: u64,
    },
    /// A `Keep` for a session whose node is gone (admin request `request`).
    Orphan { request: u64 },
}

/// A command that arrived before `hello` (while the session was claimed).
#[derive(Debug)]
pub(super) struct Queued {
    kind: u8,
    topic: Arc<str>,
    payload: Arc<[u8]>,
    binary: bool,
    now: u64,
}

impl Queued {
    /// `None` for `auth` and `send`, which never reach the hub's queue.
    pub(super) fn new(cmd: Command<'_>, binary: bool, now: u64) -> Option<Queued> {
        let (kind, topic, payload): (u8, &str, &[u8]) = match cmd {
            Command::Sub(t) => (b's', t, b""),
            Command::Unsub(t) => (b'u', t, b""),
            Command::Pub { topic, payload } => (b'p', topic, payload),
            Command::Who(t) => (b'w', t, b""),
            Command::Auth(_) | Command::Send(_) => return None,
        };
        Some(Queued {
            kind,
            topic: topic.into(),
            payload: payload.into(),
            binary,
            now,
        })
    }

    pub(super) fn command(&self) -> (Command<'_>, bool, u64) {
        let cmd = match self.kind {
            b's' => Command::Sub(&self.topic),
            b'u' => Command::Unsub(&self.topic),
            b'p' => Command::Pub {
                topic: &self.topic,
                payload: &self.payload,
            },
            _ => Command::Who(&self.topic),
        };
        (cmd, self.binary, self.now)
    }
}

impl Hub {
    /// Sends a request to the engine.
    pub(super) fn ask(&mut self, wait: Wait, op: EngineOp) {
        self.next_wait += 1;
        let id = self.next_wait;
        if !matches!(wait, Wait::Forget) {
            self.waits.insert(id, wait);
        }
        self.out.push_back(Output::Engine { id, op });
    }

    /// How long the engine keeps a session without another save: the TTL,
    /// plus two checkpoints for a connected one (refreshed while it lives).
    fn engine_ttl(&self, connected: bool) -> u64 {
        let ttl = self.cfg.session_ttl_ms;
        if connected {
            ttl.max(10 * CHECKPOINT_MS) + 2 * CHECKPOINT_MS
        } else {
            ttl
        }
    }

    /// Saves a session's state in the engine (never one whose claim is out).
    pub(super) fn save(
        &mut self,
        session: SessionId,
        drain_close: Option<super::ConnId>,
        now: u64,
    ) {
        let ttl_connected = self.engine_ttl(true);
        let ttl_gone = self.engine_ttl(false);
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        s.dirty = false;
        s.saved_at = now;
        let subs = s
            .subs
            .iter()
            .map(|(t, sub)| (t.clone(), sub.last))
            .collect();
        let ttl_ms = if s.conn.is_some() {
            ttl_connected
        } else {
            ttl_gone
        };
        let (peer, user) = (s.peer, s.user.clone());
        let direct = self.directs_delivered(session);
        self.ask(
            Wait::Save {
                session,
                drain_close,
            },
            EngineOp::Save {
                session,
                peer,
                user,
                subs,
                direct,
                ttl_ms,
            },
        );
    }

    /// Saves sessions whose seqs moved, and refreshes the engine's expiry of
    /// connected ones.
    pub(super) fn checkpoint(&mut self, now: u64) {
        if !self.engine_up {
            return;
        }
        let refresh = self.engine_ttl(true) / 2;
        let due: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.loading.is_none()
                    && !s.expiring
                    && (s.dirty || (s.conn.is_some() && now.saturating_sub(s.saved_at) >= refresh))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.save(id, None, now);
        }
    }

    /// Drain: saves the session of `conn` and closes it with 1001 once the
    /// engine has it. Returns false when there is nothing to save (close it
    /// at once). From here on the session is detached: what is published
    /// after the save is missed, and replayed wherever it resumes, so the
    /// saved state is exact (no duplicates).
    pub fn drain_close(&mut self, conn: super::ConnId, now: u64) -> bool {
        self.clock = self.clock.max(now);
        if !self.cfg.engine {
            return false;
        }
        let Some(&session) = self.conns.get(&conn) else {
            return false;
        };
        let Some(s) = self.sessions.get_mut(&session) else {
            return false;
        };
        if s.loading.is_some() {
            // Its claim is still out: nothing of ours to save.
            return false;
        }
        self.conns.remove(&conn);
        self.mark_disconnected(session, now);
        self.save(session, Some(conn), now);
        true
    }

    /// The engine became reachable (`true`) or not.
    pub fn engine_status(&mut self, up: bool, now: u64) {
        self.clock = self.clock.max(now);
        if up == self.engine_up {
            return;
        }
        self.engine_up = up;
        if up && self.cfg.core == 0 {
            // Direct messages for this node's sessions and for users.
            self.ask(Wait::Forget, EngineOp::Listen);
        }
        if !up {
            // Serve from the mirrors until the engine is back.
            for t in self.topics.values_mut() {
                t.synced = false;
            }
            return;
        }
        // Mirror again every topic this node listens to; forget the others
        // (the engine has them).
        self.topics.retain(|_, t| t.has_subscribers());
        let topics: Vec<Arc<str>> = self.topics.keys().cloned().collect();
        for topic in topics {
            let t = self.topics.get_mut(&topic).expect("listed");
            t.synced = false;
            if !t.syncing {
                t.syncing = true;
                let floor = t.seq;
                self.ask(Wait::Sync(topic.clone()), EngineOp::Sync { topic, floor });
            }
        }
        // What changed during the outage goes to the engine now.
        for s in self.sessions.values_mut() {
            s.dirty = true;
        }
        self.checkpoint(now);
        self.run_local();
    }

    /// Whether the engine is reachable, as far as this hub knows.
    pub fn engine_is_up(&self) -> bool {
        self.engine_up
    }

    /// Something published on the channel of a topic this core owns.
    pub fn engine_event(&mut self, topic: &str, event: EngineEvent) {
        let Some((topic, _)) = self.topics.get_key_value(topic) else {
            return;
        };
        let topic = topic.clone();
        match event {
            EngineEvent::Message(m) => self.on_engine_message(topic, m),
            EngineEvent::Presence { joined, member } => {
                if self.topics.get(&topic).is_some_and(|t| t.synced) {
                    self.announce(&topic, joined, &member);
                }
            }
        }
        self.run_local();
    }

    /// A save was answered: a drain's close goes out now; a save refused
    /// because another node claimed the session ends it here.
    fn on_saved(
        &mut self,
        session: SessionId,
        drain_close: Option<super::ConnId>,
        reply: &EngineReply,
    ) {
        if let Some(conn) = drain_close {
            let why = ServerClose::Draining;
            self.out.push_back(Output::Close { conn, why });
        } else if matches!(reply, EngineReply::Owned(false)) {
            // Another node claimed it: that one serves it now.
            if let Some(conn) = self.connection_of(session) {
                let why = ServerClose::Replaced;
                self.out.push_back(Output::Close { conn, why });
            }
            self.end_session(session, false);
        }
    }

    /// The engine's answer to request `id`.
    pub fn engine_reply(&mut self, id: u64, reply: EngineReply, now: u64) {
        self.clock = self.clock.max(now);
        let Some(wait) = self.waits.remove(&id) else {
            return;
        };
        match wait {
            Wait::Forget => {}
            Wait::Claim { session, conn, had } => self.on_claimed(session, conn, had, reply, now),
            Wait::Save {
                session,
                drain_close,
            } => self.on_saved(session, drain_close, &reply),
            Wait::Expire(session) => {
                let still_expiring = self
                    .sessions
                    .get(&session)
                    .is_some_and(|s| s.expiring && s.conn.is_none());
                if still_expiring {
                    let ours = !matches!(reply, EngineReply::Owned(false));
                    self.end_session(session, ours);
                }
            }
            Wait::Publish {
                topic,
                payload,
                binary,
                reply: to,
            } => match reply {
                EngineReply::Published(seq) => self.published(topic, seq, to),
                _ => self.publish_here(topic, payload, binary, to),
            },
            Wait::Sync(topic) => {
                let synced = match reply {
                    EngineReply::Synced { seq, history } => Some((seq, history)),
                    _ => None,
                };
                self.on_synced(topic, synced);
            }
            Wait::Who {
                topic,
                from,
                session,
            } => match reply {
                EngineReply::Members { count, members } => {
                    self.answer_who(topic, from, session, count, members)
                }
                _ => self.who_here(topic, from, session),
            },
            Wait::Direct(wait) => self.direct_engine_reply(wait, reply),
        }
        self.run_local();
    }

    fn on_claimed(
        &mut self,
        session: SessionId,
        conn: super::ConnId,
        had: bool,
        reply: EngineReply,
        now: u64,
    ) {
        if self.connection_of(session) != Some(conn) {
            return; // replaced or gone meanwhile; the newer claim decides
        }
        if matches!(reply, EngineReply::Mismatch) && !had {
            // Another user's session: this connection starts its own.
            self.stats.auth_mismatches += 1;
            self.rebind(session, conn, now);
            return;
        }
        if matches!(reply, EngineReply::Failed) && !had && self.cfg.policy.is_some() {
            // Nobody can say whose session the cookie names: with auth on,
            // the connection starts its own rather than take the id over.
            self.rebind(session, conn, now);
            return;
        }
        if let Some(s) = self.sessions.get_mut(&session) {
            s.placeholder = false;
        }
        if self.cfg.policy.is_some() {
            // With auth on, the 101 waited for the engine's word.
            self.out.push_back(Output::Accept { conn, session });
        }
        let resumed = match reply {
            // Ours all along: the local copy is at least as fresh.
            EngineReply::Claimed(Some(c)) if had && c.mine => {
                self.claimed_directs(session, c.directs, false);
                true
            }
            EngineReply::Claimed(Some(c)) => {
                self.claimed_directs(session, c.directs, true);
                // Another node had it last: its state replaces ours.
                let from = self.cfg.core;
                let s = self.sessions.get_mut(&session).expect("attached");
                // The name its old subscriptions here were made under.
                let member = s.member();
                if let Some(peer) = c.peer {
                    s.peer = peer; // the session keeps its public name across nodes
                }
                let stale: Vec<Arc<str>> = s.subs.drain().map(|(t, _)| t).collect();
                for (topic, last) in c.subs {
                    // The core's one copy of the name, if it has one.
                    let topic = match self.local_subs.get_key_value(&topic) {
                        Some((name, _)) => name.clone(),
                        None => topic,
                    };
                    let s = self.sessions.get_mut(&session).expect("attached");
                    s.subs.insert(
                        topic,
                        Sub {
                            last,
                            pending: false,
                        },
                    );
                }
                let s = self.sessions.get_mut(&session).expect("attached");
                let fresh: Vec<Arc<str>> = s.subs.keys().cloned().collect();
                for topic in stale {
                    self.remove_local_sub(&topic, session);
                    let owner = topic_owner(&topic, self.cfg.cores);
                    let msg = Msg::Unsubscribe {
                        topic,
                        from,
                        member: member.clone(),
                        announce: false,
                    };
                    self.mail(owner, msg);
                }
                for topic in fresh {
                    self.local_subs.entry(topic).or_default().push(session);
                }
                true
            }
            // Unknown to the engine, or the engine is away: what we have.
            _ => had,
        };
        self.greet(conn, session, resumed, now);
    }
}
