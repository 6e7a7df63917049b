//! Where a session lives: one core's share of the gateway, as a sans-IO state
//! machine (DESIGN §4, §6).
//!
//! Each core has a `Hub`. It owns the sessions whose id maps to this core and
//! the topics whose name maps to this core. A topic's owner assigns sequence
//! numbers, keeps the history and the member set, and fans each message out
//! to the cores that have subscribers, which deliver it to their local
//! sessions. Cores talk only through [`Msg`] values, and a core's mailbox is
//! FIFO per sender, so everything one topic owner sends to one core (replays,
//! live messages, acks) arrives in the order it was sent: that is what makes
//! "replay before live, no duplicates" hold without locks.
//!
//! Inputs are method calls with the current time in milliseconds; outputs are
//! [`Output`] values drained with [`Hub::poll_output`]. No sockets, no clock.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use crate::proto::command::{self, Command};
use crate::proto::cookie::SessionId;
use crate::proto::frame::{encode_frame, OpCode};

/// A connection's token on its core.
pub type ConnId = u64;

/// Who is waiting for a publish's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// A session's connection (`ok pub <topic> <seq>`).
    Session(usize, SessionId),
    /// A publish-API request on the admin core, by request number.
    Admin(usize, u64),
}

/// A message from one core's hub to another's.
#[derive(Debug, Clone)]
pub enum Msg {
    /// Subscribe `session` (on core `from`). `after: None` is a new
    /// subscription (announced with `join`); `Some(seq)` resumes after `seq`.
    Subscribe {
        topic: Arc<str>,
        from: usize,
        session: SessionId,
        after: Option<u64>,
    },
    /// Unsubscribe; announced with `leave` unless `announce` is false (the
    /// session lives on in another node).
    Unsubscribe {
        topic: Arc<str>,
        from: usize,
        session: SessionId,
        announce: bool,
    },
    /// Publish to a topic.
    Publish {
        topic: Arc<str>,
        payload: Arc<[u8]>,
        binary: bool,
        reply: Reply,
    },
    /// Ask for the member list.
    Who {
        topic: Arc<str>,
        from: usize,
        session: SessionId,
    },
    /// A message to deliver to the local subscribers of `topic`.
    Deliver {
        topic: Arc<str>,
        seq: u64,
        payload: Arc<[u8]>,
        binary: bool,
    },
    /// The owner's answer to `Subscribe`: the current sequence number, the
    /// history after the requested point, and the hole history cannot cover.
    Subscribed {
        topic: Arc<str>,
        session: SessionId,
        fresh: bool,
        current: u64,
        gap: Option<(u64, u64)>,
        history: Vec<Stored>,
    },
    /// `join` / `leave` for the local subscribers of `topic`.
    Presence {
        topic: Arc<str>,
        joined: bool,
        session: SessionId,
    },
    /// The answer to `Who`.
    Members {
        topic: Arc<str>,
        session: SessionId,
        members: Vec<SessionId>,
    },
    /// The sequence number a publish got.
    Published {
        topic: Arc<str>,
        seq: u64,
        reply: Reply,
    },
}

/// A message kept in a topic's history.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Its sequence number.
    pub seq: u64,
    /// Its payload.
    pub payload: Arc<[u8]>,
    /// Whether it was published in a binary frame.
    pub binary: bool,
}

/// What the hub asks the I/O layer to do.
#[derive(Debug, Clone)]
pub enum Output {
    /// Send a complete WebSocket frame to a connection of this core; `tag`
    /// names the message it delivers, so a loss can be rewound.
    Send {
        conn: ConnId,
        frame: Rc<[u8]>,
        tag: Option<(Arc<str>, u64)>,
    },
    /// Close a connection with a close frame.
    Close {
        conn: ConnId,
        code: u16,
        reason: &'static str,
    },
    /// Post a message to another core.
    Mail { core: usize, msg: Msg },
    /// A publish-API request on this core got its sequence number.
    AdminPublished { request: u64, seq: u64 },
    /// A request to the shared engine (`--redis`), answered with
    /// [`Hub::engine_reply`] under the same `id`.
    Engine { id: u64, op: EngineOp },
}

/// Hub settings.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// This core's index.
    pub core: usize,
    /// Number of cores.
    pub cores: usize,
    /// Name used in `hello`.
    pub node_id: String,
    /// How long a disconnected session is kept, in ms.
    pub session_ttl_ms: u64,
    /// Messages kept per topic.
    pub history_size: usize,
    /// Whether a shared engine (`--redis`) backs sessions and topics.
    pub engine: bool,
}

/// A session's view of one subscribed topic.
#[derive(Debug)]
struct Sub {
    /// The last sequence number delivered to the client.
    last: u64,
    /// Waiting for the owner's `Subscribed`; live messages are covered by it.
    pending: bool,
}

#[derive(Debug)]
struct Session {
    conn: Option<ConnId>,
    subs: HashMap<Arc<str>, Sub>,
    /// When the socket went away (ms); `None` while connected.
    disconnected_at: Option<u64>,
    /// A delivery moved `last` since the engine last saved the session.
    dirty: bool,
    /// When the engine last saved it (ms).
    saved_at: u64,
    /// Waiting for the engine's claim: commands that arrived meanwhile.
    loading: Option<Vec<Queued>>,
    /// Its TTL ran out; waiting for the engine to say whether it is ours.
    expiring: bool,
    /// Made by `attach` for a claim: holds no state until the claim answers.
    placeholder: bool,
}

impl Session {
    fn new(conn: Option<ConnId>) -> Session {
        Session {
            conn,
            subs: HashMap::new(),
            disconnected_at: None,
            dirty: false,
            saved_at: 0,
            loading: None,
            expiring: false,
            placeholder: false,
        }
    }
}

/// Counters the I/O layer exports.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HubStats {
    /// Sessions created.
    pub sessions_new: u64,
    /// Sessions resumed by a reconnect.
    pub sessions_resumed: u64,
    /// Sessions that expired or ended.
    pub sessions_ended: u64,
}

/// One core's sessions and topics.
pub struct Hub {
    cfg: HubConfig,
    sessions: HashMap<SessionId, Session>,
    conns: HashMap<ConnId, SessionId>,
    /// Local sessions subscribed to each topic.
    local_subs: HashMap<Arc<str>, Vec<SessionId>>,
    topics: HashMap<Arc<str>, Topic>,
    /// Messages to this core itself, handled in order before returning.
    local: VecDeque<Msg>,
    out: VecDeque<Output>,
    /// Whether the shared engine is reachable right now.
    engine_up: bool,
    /// Engine requests waiting for their answer.
    waits: HashMap<u64, Wait>,
    next_wait: u64,
    /// The latest time an input carried (ms), for outputs caused by mail.
    clock: u64,
    last_checkpoint: u64,
    /// Lifetime counters.
    pub stats: HubStats,
}

fn text_frame(build: impl FnOnce(&mut Vec<u8>)) -> Rc<[u8]> {
    let mut line = Vec::with_capacity(64);
    build(&mut line);
    frame_of(&line, false)
}

fn frame_of(payload: &[u8], binary: bool) -> Rc<[u8]> {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    encode_frame(
        &mut frame,
        if binary { OpCode::Binary } else { OpCode::Text },
        payload,
    );
    frame.into()
}

impl Hub {
    /// An empty hub.
    pub fn new(cfg: HubConfig) -> Hub {
        Hub {
            cfg,
            sessions: HashMap::new(),
            conns: HashMap::new(),
            local_subs: HashMap::new(),
            topics: HashMap::new(),
            local: VecDeque::new(),
            out: VecDeque::new(),
            engine_up: false,
            waits: HashMap::new(),
            next_wait: 0,
            clock: 0,
            last_checkpoint: 0,
            stats: HubStats::default(),
        }
    }

    /// Whether this core holds `session` (a sticky hit).
    pub fn has_session(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    /// Sessions held (connected or waiting for a resume).
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    fn send(&mut self, conn: ConnId, frame: Rc<[u8]>) {
        self.out.push_back(Output::Send {
            conn,
            frame,
            tag: None,
        });
    }

    fn deliver(&mut self, conn: ConnId, frame: Rc<[u8]>, topic: &Arc<str>, seq: u64) {
        self.out.push_back(Output::Send {
            conn,
            frame,
            tag: Some((topic.clone(), seq)),
        });
    }

    /// The connection a session is attached to, if any.
    pub fn connection_of(&self, session: SessionId) -> Option<ConnId> {
        self.sessions.get(&session).and_then(|s| s.conn)
    }

    /// Messages from `lost` (first lost sequence number per topic) never
    /// reached the client: the next resume replays from there.
    pub fn rewind(&mut self, session: SessionId, lost: &[(Arc<str>, u64)]) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        for (topic, seq) in lost {
            if let Some(sub) = s.subs.get_mut(topic) {
                sub.last = sub.last.min(seq.saturating_sub(1));
                s.dirty = true;
            }
        }
    }

    fn mail(&mut self, core: usize, msg: Msg) {
        if core == self.cfg.core {
            self.local.push_back(msg);
        } else {
            self.out.push_back(Output::Mail { core, msg });
        }
    }

    fn run_local(&mut self) {
        while let Some(msg) = self.local.pop_front() {
            self.handle(msg);
        }
    }

    /// A connection for `session` (owned by this core) is open. Takes over
    /// an older connection of the same session. Without an engine, or for a
    /// request without the cookie, sends `hello` at once and asks the topic
    /// owners to replay what was missed; with one, claims the session from
    /// the engine first (another node may have had it). Returns whether this
    /// core already held the session (a sticky hit).
    pub fn attach(
        &mut self,
        conn: ConnId,
        session: SessionId,
        cookie_present: bool,
        now: u64,
    ) -> bool {
        self.clock = self.clock.max(now);
        let had = match self.sessions.get_mut(&session) {
            Some(s) => {
                if let Some(old) = s.conn.replace(conn) {
                    // The old socket still looks open: this reconnect replaces it.
                    self.conns.remove(&old);
                    self.out.push_back(Output::Close {
                        conn: old,
                        code: 1008,
                        reason: "replaced",
                    });
                }
                s.disconnected_at = None;
                s.expiring = false;
                true
            }
            None => {
                self.sessions.insert(session, Session::new(Some(conn)));
                false
            }
        };
        self.conns.insert(conn, session);
        if self.cfg.engine && cookie_present {
            let s = self.sessions.get_mut(&session).expect("attached");
            s.loading = Some(Vec::new());
            s.placeholder = !had;
            self.ask(Wait::Claim { session, conn, had }, EngineOp::Claim(session));
        } else {
            self.greet(conn, session, had, now);
        }
        self.run_local();
        had
    }

    /// Sends `hello` and, for a resumed session, asks each topic owner for
    /// what was missed; then runs the commands that waited for it.
    fn greet(&mut self, conn: ConnId, session: SessionId, resumed: bool, now: u64) {
        let sid = session.to_string();
        let node = self.cfg.node_id.clone();
        self.send(
            conn,
            text_frame(|l| command::write_hello(l, &sid, resumed, &node)),
        );
        let from = self.cfg.core;
        let s = self.sessions.get_mut(&session).expect("attached");
        let queued = s.loading.take().unwrap_or_default();
        if resumed {
            self.stats.sessions_resumed += 1;
            let mut asks = Vec::with_capacity(s.subs.len());
            for (topic, sub) in s.subs.iter_mut() {
                sub.pending = true;
                asks.push((topic.clone(), sub.last));
            }
            for (topic, last) in asks {
                let owner = topic_owner(&topic, self.cfg.cores);
                self.mail(
                    owner,
                    Msg::Subscribe {
                        topic,
                        from,
                        session,
                        after: Some(last),
                    },
                );
            }
        } else {
            self.stats.sessions_new += 1;
        }
        if self.cfg.engine {
            // Persisted from the first moment, so any node can resume it.
            self.save(session, None, now);
        }
        for q in queued {
            self.run_queued(conn, q);
        }
    }

    /// The connection's socket is gone. A close with 1000 ends the session at
    /// once; anything else keeps it for `--session-ttl`.
    /// `lost` lists, per topic, the first message that never reached the client.
    pub fn detach(
        &mut self,
        conn: ConnId,
        now: u64,
        ended_by_client: bool,
        lost: &[(Arc<str>, u64)],
    ) {
        self.clock = self.clock.max(now);
        let Some(session) = self.conns.remove(&conn) else {
            return;
        };
        self.rewind(session, lost);
        if ended_by_client {
            if self.cfg.engine {
                self.ask(Wait::Forget, EngineOp::End(session));
            }
            self.end_session(session, true);
        } else if let Some(s) = self.sessions.get_mut(&session) {
            s.conn = None;
            s.disconnected_at = Some(now);
            // Gone before its claim was answered: what we hold is not the
            // session's state, so the engine's copy stays as it is, and a
            // placeholder made for the claim is dropped.
            let claimed = s.loading.take().is_none();
            if claimed {
                if self.cfg.engine {
                    self.save(session, None, now);
                }
            } else if s.placeholder {
                self.sessions.remove(&session);
            }
        }
        self.run_local();
    }

    /// Expires sessions disconnected for longer than the TTL, and with an
    /// engine, checkpoints what changed (at most once a second).
    pub fn tick(&mut self, now: u64) {
        self.clock = self.clock.max(now);
        let ttl = self.cfg.session_ttl_ms;
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                !s.expiring
                    && s.disconnected_at
                        .is_some_and(|t| now.saturating_sub(t) >= ttl)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if self.cfg.engine && self.engine_up {
                // Another node may have resumed it meanwhile: only the
                // engine's owner announces the `leave`.
                self.sessions.get_mut(&id).expect("listed").expiring = true;
                self.ask(Wait::Expire(id), EngineOp::End(id));
            } else {
                self.end_session(id, true);
            }
        }
        if self.cfg.engine && now.saturating_sub(self.last_checkpoint) >= CHECKPOINT_MS {
            self.last_checkpoint = now;
            self.checkpoint(now);
        }
        self.run_local();
    }

    /// Ends a session here; `announce` sends `leave` to its topics' members.
    fn end_session(&mut self, session: SessionId, announce: bool) {
        let Some(s) = self.sessions.remove(&session) else {
            return;
        };
        if let Some(conn) = s.conn {
            self.conns.remove(&conn);
        }
        self.stats.sessions_ended += 1;
        let from = self.cfg.core;
        for topic in s.subs.into_keys() {
            self.remove_local_sub(&topic, session);
            let owner = topic_owner(&topic, self.cfg.cores);
            self.mail(
                owner,
                Msg::Unsubscribe {
                    topic,
                    from,
                    session,
                    announce,
                },
            );
        }
    }

    fn remove_local_sub(&mut self, topic: &Arc<str>, session: SessionId) {
        if let Some(list) = self.local_subs.get_mut(topic) {
            list.retain(|s| *s != session);
            if list.is_empty() {
                self.local_subs.remove(topic);
            }
        }
    }

    /// A command from a connection of this core.
    pub fn command(&mut self, conn: ConnId, cmd: Command<'_>, binary: bool, now: u64) {
        self.clock = self.clock.max(now);
        let Some(&session) = self.conns.get(&conn) else {
            return;
        };
        if let Some(queue) = self
            .sessions
            .get_mut(&session)
            .and_then(|s| s.loading.as_mut())
        {
            // `hello` has not gone out yet: keep the command for after it.
            queue.push(Queued::new(cmd, binary, now));
            return;
        }
        self.run_command(conn, session, cmd, binary, now);
        self.run_local();
    }

    fn run_queued(&mut self, conn: ConnId, q: Queued) {
        let Some(&session) = self.conns.get(&conn) else {
            return;
        };
        let (cmd, binary, now) = q.command();
        self.run_command(conn, session, cmd, binary, now);
    }

    fn run_command(
        &mut self,
        conn: ConnId,
        session: SessionId,
        cmd: Command<'_>,
        binary: bool,
        now: u64,
    ) {
        let from = self.cfg.core;
        let subs_before = self.sessions.get(&session).map_or(0, |s| s.subs.len());
        match cmd {
            Command::Sub(topic) => {
                let s = self.sessions.get_mut(&session).expect("conn has a session");
                if s.subs.contains_key(topic) {
                    let topic: Arc<str> = topic.into();
                    let last = s.subs[&topic].last;
                    self.send(
                        conn,
                        text_frame(|l| command::write_ok(l, "sub", &topic, Some(last))),
                    );
                    return;
                }
                let topic: Arc<str> = topic.into();
                s.subs.insert(
                    topic.clone(),
                    Sub {
                        last: 0,
                        pending: true,
                    },
                );
                self.local_subs
                    .entry(topic.clone())
                    .or_default()
                    .push(session);
                let owner = topic_owner(&topic, self.cfg.cores);
                self.mail(
                    owner,
                    Msg::Subscribe {
                        topic,
                        from,
                        session,
                        after: None,
                    },
                );
            }
            Command::Unsub(topic) => {
                let s = self.sessions.get_mut(&session).expect("conn has a session");
                if let Some((topic, _)) = s.subs.remove_entry(topic) {
                    self.remove_local_sub(&topic, session);
                    let owner = topic_owner(&topic, self.cfg.cores);
                    self.mail(
                        owner,
                        Msg::Unsubscribe {
                            topic: topic.clone(),
                            from,
                            session,
                            announce: true,
                        },
                    );
                }
                self.send(
                    conn,
                    text_frame(|l| command::write_ok(l, "unsub", topic, None)),
                );
            }
            Command::Pub { topic, payload } => {
                let topic: Arc<str> = topic.into();
                let owner = topic_owner(&topic, self.cfg.cores);
                let reply = Reply::Session(from, session);
                self.mail(
                    owner,
                    Msg::Publish {
                        topic,
                        payload: payload.into(),
                        binary,
                        reply,
                    },
                );
            }
            Command::Who(topic) => {
                let owner = topic_owner(topic, self.cfg.cores);
                self.mail(
                    owner,
                    Msg::Who {
                        topic: topic.into(),
                        from,
                        session,
                    },
                );
            }
        }
        let subs_after = self.sessions.get(&session).map_or(0, |s| s.subs.len());
        if self.cfg.engine && subs_after < subs_before {
            // Subscriptions are written through (a new one when the owner
            // has numbered it: see `on_subscribed`).
            self.save(session, None, now);
        }
    }

    /// A publish from the admin API (on this core).
    pub fn publish_api(&mut self, request: u64, topic: &str, payload: &[u8], binary: bool) {
        let owner = topic_owner(topic, self.cfg.cores);
        let reply = Reply::Admin(self.cfg.core, request);
        self.mail(
            owner,
            Msg::Publish {
                topic: topic.into(),
                payload: payload.into(),
                binary,
                reply,
            },
        );
        self.run_local();
    }

    /// A message from another core's hub.
    pub fn receive(&mut self, msg: Msg) {
        self.handle(msg);
        self.run_local();
    }

    fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Subscribe {
                topic,
                from,
                session,
                after,
            } => self.on_subscribe(topic, from, session, after),
            Msg::Unsubscribe {
                topic,
                from,
                session,
                announce,
            } => self.on_unsubscribe(topic, from, session, announce),
            Msg::Publish {
                topic,
                payload,
                binary,
                reply,
            } => self.on_publish(topic, payload, binary, reply),
            Msg::Who {
                topic,
                from,
                session,
            } => self.on_who(topic, from, session),
            Msg::Deliver {
                topic,
                seq,
                payload,
                binary,
            } => self.on_deliver(topic, seq, payload, binary),
            Msg::Subscribed {
                topic,
                session,
                fresh,
                current,
                gap,
                history,
            } => self.on_subscribed(topic, session, fresh, current, gap, history),
            Msg::Presence {
                topic,
                joined,
                session,
            } => {
                let Some(list) = self.local_subs.get(&topic) else {
                    return;
                };
                let sid = session.to_string();
                let frame = text_frame(|l| command::write_presence(l, joined, &topic, &sid));
                let conns: Vec<ConnId> = list
                    .iter()
                    .filter(|s| **s != session)
                    .filter_map(|s| self.sessions.get(s).and_then(|s| s.conn))
                    .collect();
                for conn in conns {
                    self.send(conn, frame.clone());
                }
            }
            Msg::Members {
                topic,
                session,
                members,
            } => {
                let Some(conn) = self.sessions.get(&session).and_then(|s| s.conn) else {
                    return;
                };
                let ids: Vec<String> = members.iter().map(|m| m.to_string()).collect();
                let frame = text_frame(|l| {
                    command::write_members(l, &topic, ids.iter().map(|s| s.as_str()))
                });
                self.send(conn, frame);
            }
            Msg::Published { topic, seq, reply } => match reply {
                Reply::Session(_, session) => {
                    let Some(conn) = self.sessions.get(&session).and_then(|s| s.conn) else {
                        return;
                    };
                    self.send(
                        conn,
                        text_frame(|l| command::write_ok(l, "pub", &topic, Some(seq))),
                    );
                }
                Reply::Admin(_, request) => {
                    self.out.push_back(Output::AdminPublished { request, seq })
                }
            },
        }
    }

    fn on_deliver(&mut self, topic: Arc<str>, seq: u64, payload: Arc<[u8]>, binary: bool) {
        let Some((local, list)) = self.local_subs.get_key_value(&topic) else {
            return;
        };
        // Tag deliveries with this core's own copy of the name: its reference
        // count stays on this core's cache lines, however many subscribers.
        let topic = local.clone();
        let mut frame: Option<Rc<[u8]>> = None;
        let mut sends = Vec::new();
        for id in list {
            let Some(s) = self.sessions.get_mut(id) else {
                continue;
            };
            let Some(sub) = s.subs.get_mut(&topic) else {
                continue;
            };
            // Pending: the owner's `Subscribed` (sent after this) covers it.
            // Disconnected: it is missed, and replayed on resume.
            if sub.pending || seq <= sub.last {
                continue;
            }
            let Some(conn) = s.conn else { continue };
            sub.last = seq;
            s.dirty = true;
            let frame = frame.get_or_insert_with(|| {
                let mut line = Vec::with_capacity(payload.len() + topic.len() + 24);
                command::write_msg(&mut line, &topic, seq, &payload, binary);
                frame_of(&line, binary)
            });
            sends.push((conn, frame.clone()));
        }
        for (conn, frame) in sends {
            self.deliver(conn, frame, &topic, seq);
        }
    }

    fn on_subscribed(
        &mut self,
        topic: Arc<str>,
        session: SessionId,
        fresh: bool,
        current: u64,
        gap: Option<(u64, u64)>,
        history: Vec<Stored>,
    ) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(sub) = s.subs.get_mut(&topic) else {
            return;
        };
        sub.pending = false;
        s.dirty = true;
        if fresh {
            sub.last = current;
            if self.cfg.engine {
                // Written through with the seq it starts after, as `ok sub`
                // goes out: a crash right after replays nothing older.
                let now = self.clock;
                self.save(session, None, now);
            }
        }
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let Some(sub) = s.subs.get_mut(&topic) else {
            return;
        };
        let Some(conn) = s.conn else {
            return;
        };
        let mut frames = Vec::new();
        if fresh {
            sub.last = current;
            frames.push((
                text_frame(|l| command::write_ok(l, "sub", &topic, Some(current))),
                None,
            ));
        } else {
            if let Some((from, to)) = gap {
                if to > sub.last {
                    frames.push((
                        text_frame(|l| command::write_gap(l, &topic, from.max(sub.last + 1), to)),
                        None,
                    ));
                }
            }
            for m in history.iter().filter(|m| m.seq > sub.last) {
                let mut line = Vec::with_capacity(m.payload.len() + topic.len() + 24);
                command::write_msg(&mut line, &topic, m.seq, &m.payload, m.binary);
                frames.push((frame_of(&line, m.binary), Some(m.seq)));
            }
            sub.last = sub.last.max(current);
        }
        for (frame, seq) in frames {
            match seq {
                Some(seq) => self.deliver(conn, frame, &topic, seq),
                None => self.send(conn, frame),
            }
        }
    }
}

mod engine;
mod topic;

pub use engine::{Claimed, EngineEvent, EngineOp, EngineReply, CHECKPOINT_MS};
use engine::{Queued, Wait};
pub use topic::topic_owner;
use topic::Topic;

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod tests;
