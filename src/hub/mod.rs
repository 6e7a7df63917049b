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

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::num::NonZeroU64;
use std::rc::Rc;
use std::sync::Arc;

use crate::auth::{Grants, Policy};
use crate::proto::close::ServerClose;
use crate::proto::cookie::SessionId;
use crate::proto::frame::{encode_frame, OpCode};
use crate::proto::peer::{Member, PeerId};
use crate::sys::hash::IdMap;

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
        member: Member,
        after: Option<u64>,
    },
    /// Unsubscribe the session `member` names; announced with `leave`
    /// unless `announce` is false (the session lives on in another node).
    Unsubscribe {
        topic: Arc<str>,
        from: usize,
        member: Member,
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
    /// `join` / `leave` of `member` for the local subscribers of `topic`.
    Presence {
        topic: Arc<str>,
        joined: bool,
        member: Member,
    },
    /// The answer to `Who`: how many members, and who they are (peer ids,
    /// and users with auth on) unless there are more than the presence cap.
    Members {
        topic: Arc<str>,
        session: SessionId,
        count: usize,
        members: Vec<Member>,
    },
    /// The sequence number a publish got.
    Published {
        topic: Arc<str>,
        seq: u64,
        reply: Reply,
    },
    /// A direct message from the backend, for the sessions of `target` the
    /// receiving core holds; answered with `DirectDone` to `reply` (core,
    /// request).
    Direct {
        target: DirectTarget,
        payload: Arc<[u8]>,
        binary: bool,
        reply: DirectReply,
    },
    /// What one core did with a `Direct`.
    DirectDone {
        reply: DirectReply,
        count: DirectCount,
    },
}

/// A message kept in a topic's history.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// Send one message's frame to many connections of this core (fan-out:
    /// encoded once, shared by all of them); each delivery is tagged with
    /// `(topic, seq)` as `Send`'s are.
    Deliver {
        conns: Vec<ConnId>,
        frame: Rc<[u8]>,
        topic: Arc<str>,
        seq: u64,
    },
    /// Complete the held 101 of a new connection with the cookie of
    /// `session` (the session it was given: the one its cookie named, or a
    /// new one). Always comes before the connection's first frame.
    Accept { conn: ConnId, session: SessionId },
    /// Close a connection with a close frame.
    Close { conn: ConnId, why: ServerClose },
    /// Post a message to another core.
    Mail { core: usize, msg: Msg },
    /// A publish-API request on this core got its sequence number.
    AdminPublished { request: u64, seq: u64 },
    /// One answer to a direct-message request of this core (as many come
    /// as [`Hub::direct_api`] said, plus the `more` each announces: nodes
    /// the engine forwarded it to).
    AdminDirect {
        request: u64,
        count: DirectCount,
        more: usize,
    },
    /// A connection said `hello` (with `--events-hook`: its `connect` event).
    Connected {
        session: SessionId,
        peer: PeerId,
        user: Option<Arc<str>>,
        resumed: bool,
    },
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
    /// With authentication on: the flags' topic patterns (every session
    /// also has its token's own grants). `None`: auth off, all allowed.
    pub policy: Option<Arc<Policy>>,
    /// `--presence-max-members`: above this many members a topic sends no
    /// `join`/`leave` lines and `who` answers the count only.
    pub presence_cap: usize,
    /// `--topic-ttl` in ms: how long a topic with no member is kept after
    /// its last member left or its last publish.
    pub topic_ttl_ms: u64,
    /// `--events-hook` is set: `hello` is reported as [`Output::Connected`].
    pub events: bool,
}

/// Who an authenticated connection is (DESIGN §11).
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user id (the token's `sub`, or the auth hook's `user`).
    pub user: Arc<str>,
    /// The token's (and hook's) own topic patterns, beyond the flags'.
    pub grants: Option<Box<Grants>>,
}

/// What [`Hub::attach`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attached {
    /// The session the connection got: the cookie's, or a new one when the
    /// cookie named another user's session.
    pub session: SessionId,
    /// This core already held the session (a sticky hit).
    pub had: bool,
    /// The cookie named another user's session.
    pub mismatch: bool,
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
    /// What other clients see of this session (never its id).
    peer: PeerId,
    /// Its user, with authentication on (shared with its presence entries).
    user: Option<Arc<str>>,
    /// Its token's own topic patterns (usually none: one null pointer).
    grants: Option<Box<Grants>>,
    /// Its connection's token (never 0), when connected: 8 bytes where an
    /// `Option<ConnId>` takes 16, keeping a session in a 112-byte chunk.
    conn: Option<NonZeroU64>,
    subs: Subs,
    /// When the socket went away (ms); `None` while connected.
    /// (Kept plus one, so that `None` costs no tag: 8 bytes, not 16.)
    disconnected_at: Option<NonZeroU64>,
    /// A delivery moved `last` since the engine last saved the session.
    dirty: bool,
    /// When the engine last saved it (ms).
    saved_at: u64,
    /// Waiting for the engine's claim: commands that arrived meanwhile
    /// (boxed: most sessions never wait, and a session should be small:
    /// one pointer instead of a `Vec`'s three words).
    #[allow(clippy::box_collection)]
    loading: Option<Box<Vec<Queued>>>,
    /// Its TTL ran out; waiting for the engine to say whether it is ours.
    expiring: bool,
    /// Made by `attach` for a claim: holds no state until the claim answers.
    placeholder: bool,
}

impl Session {
    fn new(conn: Option<ConnId>, who: Option<Identity>) -> Session {
        let (user, grants) = who.map_or((None, None), |w| (Some(w.user), w.grants));
        Session {
            peer: PeerId::random(),
            user,
            grants,
            conn: conn.map(conn_token),
            subs: Subs::default(),
            disconnected_at: None,
            dirty: false,
            saved_at: 0,
            loading: None,
            expiring: false,
            placeholder: false,
        }
    }

    /// Its connection, when connected.
    fn conn(&self) -> Option<ConnId> {
        self.conn.map(NonZeroU64::get)
    }

    /// How presence names it.
    fn member(&self) -> Member {
        Member::new(self.peer, self.user.clone())
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
    /// Upgrades whose cookie named another user's session.
    pub auth_mismatches: u64,
}

/// Entries an empty output or local queue keeps between bursts.
const IDLE_QUEUE: usize = 64;

/// One core's sessions and topics.
pub struct Hub {
    cfg: HubConfig,
    /// Boxed: a table of 5,000 sessions has 8,192 slots, and an empty slot
    /// costs a pointer rather than a whole session.
    sessions: IdMap<SessionId, Box<Session>>,
    conns: conn_table::ConnTable,
    /// Local sessions subscribed to each topic.
    local_subs: IdMap<Arc<str>, Vec<SessionId>>,
    topics: IdMap<Arc<str>, Topic>,
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
    /// When disconnected sessions are due to expire (ms), earliest first;
    /// an entry whose session came back or left again later is skipped.
    expiries: BinaryHeap<Reverse<(u64, SessionId)>>,
    /// When member-less topics may be forgotten (ms), earliest first; one
    /// entry per topic at most (see `Topic::queued`).
    topic_expiries: BinaryHeap<Reverse<(u64, Arc<str>)>>,
    /// Topics forgotten since the I/O layer last asked (to give memory back).
    topics_freed: usize,
    /// Direct messages of the sessions that got one (most have none).
    directs: IdMap<SessionId, Box<direct::Directs>>,
    /// [`DIRECT_TAG`], shared by the delivery records of direct messages.
    direct_tag: Arc<str>,
    /// Direct messages being forwarded or numbered by the engine.
    book: direct::DirectBook,
    /// Lifetime counters.
    pub stats: HubStats,
}

/// A gateway connection's token as a session keeps it (tokens are never 0).
fn conn_token(conn: ConnId) -> NonZeroU64 {
    NonZeroU64::new(conn).expect("a connection token is never 0")
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
            sessions: IdMap::default(),
            conns: conn_table::ConnTable::default(),
            local_subs: IdMap::default(),
            topics: IdMap::default(),
            local: VecDeque::new(),
            out: VecDeque::new(),
            engine_up: false,
            waits: HashMap::new(),
            next_wait: 0,
            clock: 0,
            last_checkpoint: 0,
            expiries: BinaryHeap::new(),
            topic_expiries: BinaryHeap::new(),
            topics_freed: 0,
            directs: IdMap::default(),
            direct_tag: DIRECT_TAG.into(),
            book: direct::DirectBook::default(),
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

    /// Topics this core owns (or mirrors) right now.
    pub fn topic_count(&self) -> usize {
        self.topics.len()
    }

    /// How many topics were forgotten since the last call (the I/O layer
    /// gives their memory back to the system after a large sweep).
    pub fn take_topics_freed(&mut self) -> usize {
        std::mem::take(&mut self.topics_freed)
    }

    /// Time has come to `now` (ms): what mail causes is dated by it.
    pub fn advance(&mut self, now: u64) {
        self.clock = self.clock.max(now);
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        let out = self.out.pop_front();
        if out.is_none() && self.out.capacity() > 4096 {
            // A burst is over: its queue's memory goes back.
            self.out = VecDeque::with_capacity(64);
        }
        out
    }

    /// Gives back what a burst grew in the output and local queues once
    /// they are empty (the I/O layer calls it about once a second).
    pub fn shrink_idle_queues(&mut self) {
        if self.out.is_empty() && self.out.capacity() > IDLE_QUEUE {
            self.out = VecDeque::new();
        }
        if self.local.is_empty() && self.local.capacity() > IDLE_QUEUE {
            self.local = VecDeque::new();
        }
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

    /// The peer id of a session this core holds.
    pub fn peer_of(&self, session: SessionId) -> Option<PeerId> {
        self.sessions.get(&session).map(|s| s.peer)
    }

    /// Who the gateway connection `conn` is: its session, peer id and user.
    pub fn identity_of(&self, conn: ConnId) -> Option<(SessionId, PeerId, Option<Arc<str>>)> {
        let session = *self.conns.get(&conn)?;
        let s = self.sessions.get(&session)?;
        Some((session, s.peer, s.user.clone()))
    }

    /// The connection a session is attached to, if any.
    pub fn connection_of(&self, session: SessionId) -> Option<ConnId> {
        self.sessions.get(&session).and_then(|s| s.conn())
    }

    /// Messages from `lost` (first lost sequence number per topic) never
    /// reached the client: the next resume replays from there.
    pub fn rewind(&mut self, session: SessionId, lost: &[(Arc<str>, u64)]) {
        let Some(s) = self.sessions.get_mut(&session) else {
            return;
        };
        let mut direct = None;
        for (topic, seq) in lost {
            if **topic == *DIRECT_TAG {
                direct = Some(*seq);
            } else if let Some(sub) = s.subs.get_mut(topic) {
                sub.last = sub.last.min(seq.saturating_sub(1));
                s.dirty = true;
            }
        }
        if let Some(seq) = direct {
            self.rewind_directs(session, seq);
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
}

mod commands;
mod conn_table;
mod deliver;
mod direct;
mod engine;
mod members;
mod session;
mod subs;
mod topic;

pub use direct::{DirectCount, DirectPush, DirectReply, DirectTarget, DIRECT_TAG};
pub use engine::{Claimed, ClaimedDirects, EngineEvent, EngineOp, EngineReply, CHECKPOINT_MS};
use engine::{Queued, Wait};
use subs::Subs;
pub use topic::topic_owner;
use topic::Topic;

#[cfg(test)]
mod engine_tests;
#[cfg(test)]
mod tests;
