//! The hub with a shared engine, driven in memory: several nodes of several
//! cores each, and a fake engine that does what the Redis scripts do
//! (`crate::engine::scripts`), answering each core in order on its own
//! connection. One concept over 500 lines: the fake engine and the
//! scenarios it drives belong together.

use std::collections::HashSet;

use super::*;
use crate::proto::command::parse;
use crate::proto::peer::{Member, PeerId};

const TTL: u64 = 10_000;

/// Something arriving on a core's engine connection, in order.
enum In {
    Reply(u64, EngineReply),
    Push(Arc<str>, EngineEvent),
    Direct(DirectPush),
}

type Place = (usize, usize); // (node, core)
/// A session's owner, subscriptions and peer id.
type SavedSession = (String, Vec<(Arc<str>, u64)>, PeerId, Option<Arc<str>>);

#[derive(Default)]
struct Fake {
    sessions: HashMap<SessionId, SavedSession>,
    topics: HashMap<Arc<str>, (u64, VecDeque<Stored>)>,
    members: HashMap<Arc<str>, HashSet<Member>>,
    watchers: HashMap<Arc<str>, Vec<Place>>,
    /// Direct messages per session: last number, kept ones, last delivered.
    directs: HashMap<SessionId, (u64, VecDeque<Stored>, u64)>,
    /// Who listens on each process's channel and the users' channel.
    listeners: HashMap<String, Place>,
}

struct Fleet {
    hubs: Vec<Vec<Hub>>,
    mail: Vec<Vec<VecDeque<Msg>>>,
    up: Vec<bool>,
    inbound: HashMap<Place, VecDeque<In>>,
    fake: Fake,
    history_size: usize,
    received: HashMap<ConnId, Vec<String>>,
    /// The session each connection's 101 was completed with.
    accepted: HashMap<ConnId, SessionId>,
    closed: Vec<(ConnId, u16)>,
    place: HashMap<ConnId, Place>,
    next_conn: ConnId,
    now: u64,
    /// Every session id a test used: no line may ever carry one.
    session_ids: Vec<String>,
    /// Direct-message requests per (node, core, request): the sum of the
    /// answers, how many were announced beyond the first, how many came.
    directs: HashMap<(usize, usize, u64), (DirectCount, usize, usize)>,
    next_request: u64,
}

fn instance(node: usize) -> String {
    format!("node{node}")
}

fn text(frame: &[u8]) -> String {
    let start = match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    String::from_utf8_lossy(&frame[start..]).into_owned()
}

impl Fleet {
    fn new(nodes: usize, cores: usize, history_size: usize) -> Fleet {
        Fleet::with_policy(nodes, cores, history_size, None)
    }

    /// A fleet with authentication on (`policy`: the flags' patterns).
    fn with_policy(
        nodes: usize,
        cores: usize,
        history_size: usize,
        policy: Option<Arc<crate::auth::Policy>>,
    ) -> Fleet {
        let mut fleet = Fleet {
            hubs: (0..nodes)
                .map(|n| {
                    (0..cores)
                        .map(|core| {
                            Hub::new(HubConfig {
                                core,
                                cores,
                                node_id: format!("n{n}"),
                                session_ttl_ms: TTL,
                                history_size,
                                engine: true,
                                policy: policy.clone(),
                                presence_cap: 1000,
                                topic_ttl_ms: 60_000,
                                events: false,
                            })
                        })
                        .collect()
                })
                .collect(),
            mail: vec![vec![VecDeque::new(); cores]; nodes],
            up: vec![true; nodes],
            inbound: HashMap::new(),
            fake: Fake::default(),
            history_size,
            received: HashMap::new(),
            accepted: HashMap::new(),
            closed: Vec::new(),
            place: HashMap::new(),
            next_conn: 1,
            now: 1,
            session_ids: Vec::new(),
            directs: HashMap::new(),
            next_request: 0,
        };
        for node in 0..nodes {
            for hub in &mut fleet.hubs[node] {
                hub.engine_status(true, 1);
            }
        }
        fleet.settle();
        fleet
    }

    fn push(&mut self, at: Place, item: In) {
        self.inbound.entry(at).or_default().push_back(item);
    }

    /// What Redis would do with `op` from `at`.
    fn execute(&mut self, at: Place, id: u64, op: EngineOp) {
        if !self.up[at.0] {
            self.push(at, In::Reply(id, EngineReply::Failed));
            return;
        }
        let me = instance(at.0);
        let f = &mut self.fake;
        let reply = match op {
            EngineOp::Claim { session: s, user } => match f.sessions.get_mut(&s) {
                None => EngineReply::Claimed(None),
                Some((.., saved)) if *saved != user => EngineReply::Mismatch,
                Some((owner, subs, peer, _)) => {
                    let mine = *owner == me;
                    *owner = me;
                    let (seq, kept, delivered) = f.directs.get(&s).cloned().unwrap_or_default();
                    EngineReply::Claimed(Some(Claimed {
                        mine,
                        subs: subs.clone(),
                        peer: Some(*peer),
                        directs: ClaimedDirects {
                            delivered,
                            seq,
                            kept: kept.into(),
                        },
                    }))
                }
            },
            EngineOp::Save {
                session,
                peer,
                user,
                subs,
                direct,
                ..
            } => match f.sessions.get(&session) {
                Some((owner, ..)) if *owner != me => EngineReply::Owned(false),
                _ => {
                    f.directs.entry(session).or_default().2 = direct;
                    f.sessions.insert(session, (me, subs, peer, user));
                    EngineReply::Owned(true)
                }
            },
            EngineOp::End(s) => match f.sessions.get(&s) {
                Some((owner, ..)) if *owner != me => EngineReply::Owned(false),
                _ => {
                    f.sessions.remove(&s);
                    f.directs.remove(&s);
                    EngineReply::Owned(true)
                }
            },
            EngineOp::Publish {
                topic,
                payload,
                binary,
                floor,
            } => {
                let (seq, history) = f.topics.entry(topic.clone()).or_default();
                *seq = (*seq + 1).max(floor + 1);
                let m = Stored {
                    seq: *seq,
                    payload,
                    binary,
                };
                history.push_back(m.clone());
                while history.len() > self.history_size {
                    history.pop_front();
                }
                let seq = *seq;
                for w in f.watchers.get(&topic).cloned().unwrap_or_default() {
                    self.push(w, In::Push(topic.clone(), EngineEvent::Message(m.clone())));
                }
                EngineReply::Published(seq)
            }
            EngineOp::Sync { topic, floor } => {
                let w = f.watchers.entry(topic.clone()).or_default();
                if !w.contains(&at) {
                    w.push(at);
                }
                let t = f.topics.entry(topic.clone()).or_default();
                t.0 = t.0.max(floor);
                let (seq, history) = t.clone();
                EngineReply::Synced {
                    seq,
                    history: history.into(),
                }
            }
            EngineOp::Unwatch(topic) => {
                if let Some(w) = f.watchers.get_mut(&topic) {
                    w.retain(|p| *p != at);
                }
                EngineReply::Done
            }
            // Membership changed in `settle`, before the reply (as the script does).
            EngineOp::Join { .. } | EngineOp::Leave { .. } => EngineReply::Done,
            EngineOp::Who(topic) => {
                let members: Vec<Member> = (f.members.get(&topic))
                    .map(|m| m.iter().cloned().collect())
                    .unwrap_or_default();
                EngineReply::Members {
                    count: members.len(),
                    members,
                }
            }
            EngineOp::Listen => {
                f.listeners.insert(me, at);
                EngineReply::Done
            }
            EngineOp::Route {
                target,
                payload,
                binary,
                core,
                request,
            } => {
                let to: Option<Vec<Place>> = match &target {
                    DirectTarget::Session(s) => (f.sessions.get(s))
                        .map(|(owner, ..)| f.listeners.get(owner).copied().into_iter().collect()),
                    DirectTarget::User(_) => Some(f.listeners.values().copied().collect()),
                };
                match to {
                    None => EngineReply::Routed(-1),
                    Some(to) => {
                        for place in &to {
                            let push = DirectPush::Request {
                                origin: me.as_str().into(),
                                core,
                                request,
                                target: target.clone(),
                                payload: payload.clone(),
                                binary,
                            };
                            self.push(*place, In::Direct(push));
                        }
                        EngineReply::Routed(to.len() as i64)
                    }
                }
            }
            EngineOp::Keep {
                session,
                payload,
                binary,
                floor,
            } => {
                let (seq, kept, _) = f.directs.entry(session).or_default();
                *seq = (*seq + 1).max(floor + 1);
                kept.push_back(Stored {
                    seq: *seq,
                    payload,
                    binary,
                });
                while kept.len() > self.history_size {
                    kept.pop_front();
                }
                EngineReply::Kept(*seq)
            }
            EngineOp::Answer {
                origin,
                core,
                request,
                count,
            } => {
                if let Some(place) = f.listeners.get(&*origin).copied() {
                    let push = DirectPush::Answer {
                        core,
                        request,
                        count,
                    };
                    self.push(place, In::Direct(push));
                }
                EngineReply::Done
            }
        };
        self.push(at, In::Reply(id, reply));
    }

    fn presence(&mut self, topic: Arc<str>, member: Member, joined: bool) {
        let set = self.fake.members.entry(topic.clone()).or_default();
        let changed = if joined {
            set.insert(member.clone())
        } else {
            set.remove(&member)
        };
        if changed {
            for w in self.fake.watchers.get(&topic).cloned().unwrap_or_default() {
                self.push(
                    w,
                    In::Push(
                        topic.clone(),
                        EngineEvent::Presence {
                            joined,
                            member: member.clone(),
                        },
                    ),
                );
            }
        }
    }

    fn settle(&mut self) {
        loop {
            let mut any = false;
            for node in 0..self.hubs.len() {
                for core in 0..self.hubs[node].len() {
                    while let Some(out) = self.hubs[node][core].poll_output() {
                        any = true;
                        match out {
                            Output::Send { conn, frame, .. } => {
                                let line = text(&frame);
                                // DESIGN §6: the session id is a bearer secret.
                                for id in &self.session_ids {
                                    assert!(
                                        !line.contains(id.as_str()),
                                        "a session id in {line:?}"
                                    );
                                }
                                // The 101 is complete before anything else.
                                assert!(
                                    self.accepted.contains_key(&conn),
                                    "{line:?} before the 101"
                                );
                                self.received.entry(conn).or_default().push(line)
                            }
                            Output::Deliver { conns, frame, .. } => {
                                let line = text(&frame);
                                for conn in conns {
                                    assert!(
                                        self.accepted.contains_key(&conn),
                                        "{line:?} before the 101"
                                    );
                                    self.received.entry(conn).or_default().push(line.clone());
                                }
                            }
                            Output::Accept { conn, session } => {
                                assert!(
                                    self.accepted.insert(conn, session).is_none(),
                                    "accepted twice"
                                );
                            }
                            Output::Close { conn, why } => self.closed.push((conn, why.code().0)),
                            Output::Mail { core: to, msg } => self.mail[node][to].push_back(msg),
                            Output::AdminDirect {
                                request,
                                count,
                                more,
                            } => {
                                let w = self.directs.entry((node, core, request)).or_default();
                                w.0.add(count);
                                w.1 += more;
                                w.2 += 1;
                            }
                            Output::AdminPublished { .. } | Output::Connected { .. } => {}
                            Output::Engine { id, op } => {
                                if self.up[node] {
                                    match &op {
                                        EngineOp::Join { topic, member } => {
                                            self.presence(topic.clone(), member.clone(), true)
                                        }
                                        EngineOp::Leave { topic, member } => {
                                            self.presence(topic.clone(), member.clone(), false)
                                        }
                                        _ => {}
                                    }
                                }
                                self.execute((node, core), id, op);
                            }
                        }
                    }
                }
            }
            // One item per queue per round: interleave adversarially.
            for node in 0..self.hubs.len() {
                for core in 0..self.hubs[node].len() {
                    if let Some(msg) = self.mail[node][core].pop_front() {
                        self.hubs[node][core].receive(msg);
                        any = true;
                    }
                    let now = self.now;
                    match self
                        .inbound
                        .get_mut(&(node, core))
                        .and_then(|q| q.pop_front())
                    {
                        Some(In::Reply(id, r)) => {
                            self.hubs[node][core].engine_reply(id, r, now);
                            any = true;
                        }
                        Some(In::Push(topic, ev)) => {
                            self.hubs[node][core].engine_event(&topic, ev);
                            any = true;
                        }
                        Some(In::Direct(push)) => {
                            self.hubs[node][core].engine_direct(push, now);
                            any = true;
                        }
                        None => {}
                    }
                }
            }
            if !any {
                return;
            }
        }
    }

    fn connect(&mut self, node: usize, session: SessionId, cookie: bool) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        let core = session.owner(self.hubs[node].len());
        self.place.insert(conn, (node, core));
        self.session_ids.push(session.to_string());
        let now = self.now;
        self.hubs[node][core].attach(conn, session, cookie, None, now);
        self.settle();
        conn
    }

    /// The peer id of `session` as node `node` holds it.
    fn peer(&self, node: usize, session: SessionId) -> String {
        let core = session.owner(self.hubs[node].len());
        let hub = &self.hubs[node][core];
        hub.peer_of(session).expect("held").to_string()
    }

    fn cmd(&mut self, conn: ConnId, line: &str) {
        let (node, core) = self.place[&conn];
        let now = self.now;
        self.hubs[node][core].command(conn, parse(line.as_bytes(), false).unwrap(), false, now);
        self.settle();
    }

    fn drop_conn(&mut self, conn: ConnId) {
        let (node, core) = self.place[&conn];
        let now = self.now;
        self.hubs[node][core].detach(conn, now, false, &[]);
        self.settle();
    }

    fn advance(&mut self, ms: u64) {
        self.now += ms;
        let now = self.now;
        for node in &mut self.hubs {
            for hub in node {
                hub.tick(now);
            }
        }
        self.settle();
    }

    fn set_up(&mut self, node: usize, up: bool) {
        self.up[node] = up;
        let now = self.now;
        for hub in &mut self.hubs[node] {
            hub.engine_status(up, now);
        }
        self.settle();
    }

    /// `POST /send/...` on node `node`'s core 0: the count once every
    /// answer came.
    fn direct(&mut self, node: usize, target: DirectTarget, payload: &str) -> DirectCount {
        self.next_request += 1;
        let request = self.next_request;
        let asked = self.hubs[node][0].direct_api(request, target, payload.as_bytes(), false);
        self.settle();
        let (count, more, came) = self.directs.remove(&(node, 0, request)).unwrap_or_default();
        assert_eq!(came, asked + more, "every answer announced came");
        count
    }

    fn lines(&mut self, conn: ConnId) -> Vec<String> {
        self.received.remove(&conn).unwrap_or_default()
    }
}

fn msgs(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.starts_with("msg "))
        .cloned()
        .collect()
}

#[test]
fn a_publish_on_one_node_reaches_every_node_once_in_order() {
    let mut f = Fleet::new(3, 2, 16);
    let ids: Vec<SessionId> = (0..6).map(|_| SessionId::random()).collect();
    let conns: Vec<ConnId> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| f.connect(i % 3, *id, false))
        .collect();
    for c in &conns {
        f.cmd(*c, "sub room");
        f.lines(*c);
    }
    for i in 0..5 {
        f.cmd(conns[i % 2], &format!("pub room m{i}"));
    }
    let want: Vec<String> = (0..5).map(|i| format!("msg room {} m{i}", i + 1)).collect();
    for c in &conns {
        assert_eq!(msgs(&f.lines(*c)), want, "conn {c}");
    }
}

#[test]
fn a_session_resumes_on_another_node_with_what_it_missed() {
    let mut f = Fleet::new(2, 2, 16);
    let id = SessionId::random();
    let a = f.connect(0, id, false);
    let pa = f.peer(0, id);
    f.cmd(a, "sub news");
    let other = f.connect(1, SessionId::random(), false);
    f.cmd(other, "sub news");
    f.cmd(other, "pub news one");
    f.lines(a);
    f.drop_conn(a);
    for i in 0..3 {
        f.cmd(other, &format!("pub news miss{i}"));
    }
    f.lines(other);
    let b = f.connect(1, id, true);
    let got = f.lines(b);
    // The peer id travelled with the session: presence does not flicker.
    assert_eq!(got[0], format!("hello {pa} resumed n1"));
    assert_eq!(
        msgs(&got),
        ["msg news 2 miss0", "msg news 3 miss1", "msg news 4 miss2"]
    );
    assert!(!got
        .iter()
        .any(|l| l.starts_with("join") || l.starts_with("leave")));
    f.cmd(other, "pub news live");
    assert_eq!(msgs(&f.lines(b)), ["msg news 5 live"]);
    // The stale copy on node 0 expires without a `leave`: node 1 owns it.
    f.advance(TTL + 1000);
    assert!(f.lines(other).iter().all(|l| !l.starts_with("leave")));
    assert!(!f.hubs[0].iter().any(|h| h.has_session(id)));
}

#[test]
fn an_unknown_cookie_is_new_and_a_session_is_saved_from_the_start() {
    let mut f = Fleet::new(2, 1, 16);
    let id = SessionId::random();
    let a = f.connect(0, id, true);
    let pa = f.peer(0, id);
    assert_eq!(f.lines(a), [format!("hello {pa} new n0")]);
    assert!(f.fake.sessions.contains_key(&id));
    f.drop_conn(a);
    let b = f.connect(1, id, true);
    assert_eq!(f.lines(b), [format!("hello {pa} resumed n1")]);
}

#[test]
fn commands_sent_before_hello_run_after_it() {
    let mut f = Fleet::new(1, 1, 16);
    let id = SessionId::random();
    let conn = f.next_conn;
    f.next_conn += 1;
    f.place.insert(conn, (0, 0));
    f.hubs[0][0].attach(conn, id, true, None, 1);
    f.hubs[0][0].command(conn, parse(b"sub x", false).unwrap(), false, 1);
    f.settle();
    let got = f.lines(conn);
    let p = f.peer(0, id);
    assert_eq!(got, [format!("hello {p} new n0"), "ok sub x 0".into()]);
}

#[test]
fn presence_and_who_are_fleet_wide() {
    let mut f = Fleet::new(2, 2, 16);
    let (x, y) = (SessionId::random(), SessionId::random());
    let a = f.connect(0, x, false);
    let b = f.connect(1, y, false);
    let (px, py) = (f.peer(0, x), f.peer(1, y));
    f.cmd(a, "sub p");
    f.cmd(b, "sub p");
    assert!(f.lines(a).contains(&format!("join p {py}")));
    f.cmd(b, "who p");
    let mut ids = [px, py.clone()];
    ids.sort();
    assert!(f
        .lines(b)
        .contains(&format!("members p 2 {} {}", ids[0], ids[1])));
    f.cmd(b, "unsub p");
    assert!(f.lines(a).contains(&format!("leave p {py}")));
}

#[test]
fn without_the_engine_a_node_serves_locally_and_numbers_stay_increasing() {
    let mut f = Fleet::new(2, 1, 16);
    let a = f.connect(0, SessionId::random(), false);
    let b = f.connect(1, SessionId::random(), false);
    f.cmd(a, "sub t");
    f.cmd(b, "sub t");
    f.cmd(a, "pub t before");
    f.lines(a);
    f.lines(b);
    f.set_up(0, false);
    f.cmd(a, "pub t local");
    assert_eq!(
        f.lines(a),
        ["msg t 2 local".to_string(), "ok pub t 2".to_string()]
    );
    assert!(f.lines(b).is_empty(), "node 1 cannot hear node 0 now");
    f.set_up(0, true);
    f.cmd(b, "pub t after");
    // Never at or below what node 0's subscriber has seen.
    assert_eq!(msgs(&f.lines(a)), ["msg t 3 after"]);
    assert_eq!(msgs(&f.lines(b)), ["msg t 3 after"]);
}

#[test]
fn a_node_that_lost_its_session_to_another_closes_the_old_socket() {
    let mut f = Fleet::new(2, 1, 16);
    let id = SessionId::random();
    let old = f.connect(0, id, false);
    f.cmd(old, "sub z");
    let new = f.connect(1, id, true);
    assert!(f.lines(new)[0].contains("resumed"));
    // Node 0 still thinks `old` is open; its next save finds the new owner.
    f.cmd(old, "sub z2");
    assert!(f.closed.contains(&(old, 1008)));
    assert!(!f.hubs[0][0].has_session(id));
}

#[test]
fn a_drained_session_is_saved_before_its_close_and_resumes_exactly() {
    let mut f = Fleet::new(2, 1, 16);
    let id = SessionId::random();
    let a = f.connect(0, id, false);
    f.cmd(a, "sub d");
    let p = f.connect(1, SessionId::random(), false);
    f.cmd(p, "pub d one");
    f.lines(a);
    let now = f.now;
    assert!(f.hubs[0][0].drain_close(a, now));
    // Published between the save and the close: not sent on the old socket.
    f.hubs[0][0].command(a, parse(b"pub d ignored", false).unwrap(), false, now);
    f.settle();
    assert!(f.closed.contains(&(a, 1001)));
    f.cmd(p, "pub d two");
    assert!(msgs(&f.lines(a)).is_empty());
    let b = f.connect(1, id, true);
    let got = f.lines(b);
    assert!(got[0].ends_with("resumed n1"));
    assert_eq!(msgs(&got), ["msg d 2 two"]);
}

#[test]
fn a_subscription_is_saved_with_the_seq_it_starts_after() {
    let mut f = Fleet::new(2, 2, 16);
    let p = f.connect(1, SessionId::random(), false);
    for i in 0..3 {
        f.cmd(p, &format!("pub late m{i}"));
    }
    let id = SessionId::random();
    let a = f.connect(0, id, false);
    f.cmd(a, "sub late");
    assert!(f.lines(a).contains(&"ok sub late 3".to_string()));
    // No checkpoint has run: the write-through alone must say "after 3".
    let saved = &f.fake.sessions[&id].1;
    assert_eq!(saved, &vec![(Arc::from("late"), 3)]);
    let b = f.connect(1, id, true);
    assert!(msgs(&f.lines(b)).is_empty(), "nothing older than the sub");
}

#[test]
fn a_socket_gone_before_its_claim_leaves_the_engine_state_alone() {
    let mut f = Fleet::new(2, 1, 16);
    let id = SessionId::random();
    let a = f.connect(0, id, false);
    f.cmd(a, "sub keep");
    f.drop_conn(a);
    // Reconnect on node 1 and drop before the claim is answered.
    let b = f.next_conn;
    f.next_conn += 1;
    f.place.insert(b, (1, 0));
    f.hubs[1][0].attach(b, id, true, None, 1);
    f.hubs[1][0].detach(b, 1, false, &[]);
    f.settle();
    assert_eq!(f.fake.sessions[&id].1, vec![(Arc::from("keep"), 0)]);
    assert!(!f.hubs[1][0].has_session(id), "the placeholder is gone");
    let c = f.connect(1, id, true);
    assert!(f.lines(c)[0].ends_with("resumed n1"));
    let p = f.connect(0, SessionId::random(), false);
    f.cmd(p, "pub keep still-subscribed");
    assert_eq!(msgs(&f.lines(c)), ["msg keep 1 still-subscribed"]);
}

fn as_user(user: &str) -> Option<Identity> {
    Some(Identity {
        user: user.into(),
        grants: None,
    })
}

#[test]
fn another_users_cookie_gets_a_new_session_on_any_node() {
    let policy = crate::auth::Policy::from_flags(&["*"], &["*"]).unwrap();
    let mut f = Fleet::with_policy(2, 1, 16, Some(Arc::new(policy)));
    let id = SessionId::random();
    let a = f.next_conn;
    f.next_conn += 1;
    f.place.insert(a, (0, 0));
    f.session_ids.push(id.to_string());
    f.hubs[0][0].attach(a, id, false, as_user("alice"), 1);
    f.settle();
    assert_eq!(f.accepted[&a], id);
    assert!(f.lines(a)[0].ends_with("new n0 alice"));
    f.cmd(a, "sub room");
    // Bob presents alice's session id on node 1; a command arrives before
    // the claim is answered.
    let b = f.next_conn;
    f.next_conn += 1;
    f.place.insert(b, (1, 0));
    f.hubs[1][0].attach(b, id, true, as_user("bob"), 1);
    assert!(!f.accepted.contains_key(&b), "the 101 waits for the claim");
    f.hubs[1][0].command(b, parse(b"sub other", false).unwrap(), false, 1);
    f.settle();
    let fresh = f.accepted[&b];
    assert_ne!(fresh, id, "bob gets a session of his own");
    f.session_ids.push(fresh.to_string());
    let got = f.lines(b);
    assert!(got[0].ends_with("new n1 bob"), "{got:?}");
    assert!(got.contains(&"ok sub other 0".to_string()), "{got:?}");
    assert_eq!(f.hubs[1][0].stats.auth_mismatches, 1);
    // Alice's session is untouched: still hers, still on node 0, open.
    let (owner, subs, _, user) = &f.fake.sessions[&id];
    assert_eq!(
        (owner.as_str(), user.as_deref()),
        (instance(0).as_str(), Some("alice"))
    );
    assert_eq!(subs, &vec![(Arc::from("room"), 0)]);
    assert!(f.closed.is_empty());
    let p = f.connect(1, SessionId::random(), false);
    f.cmd(p, "pub room still-hers");
    assert!(msgs(&f.lines(a)).contains(&"msg room 1 still-hers".to_string()));
}

#[test]
fn a_who_right_behind_the_first_sub_counts_the_subscriber() {
    let mut f = Fleet::new(1, 2, 16);
    let x = SessionId::random();
    let a = f.connect(0, x, false);
    let px = f.peer(0, x);
    f.lines(a);
    // Both in one read, before the topic's copy has synced with the engine.
    let (node, core) = f.place[&a];
    let now = f.now;
    let hub = &mut f.hubs[node][core];
    hub.command(a, parse(b"sub fresh", false).unwrap(), false, now);
    hub.command(a, parse(b"who fresh", false).unwrap(), false, now);
    f.settle();
    let lines = f.lines(a);
    assert!(
        lines.contains(&format!("members fresh 1 {px}")),
        "the who waited for the sub it came behind: {lines:?}"
    );
}

/// Connects `session` on `node` as `user` (authentication on).
fn connect_as(f: &mut Fleet, node: usize, session: SessionId, cookie: bool, user: &str) -> ConnId {
    let conn = f.next_conn;
    f.next_conn += 1;
    let core = session.owner(f.hubs[node].len());
    f.place.insert(conn, (node, core));
    f.session_ids.push(session.to_string());
    let now = f.now;
    f.hubs[node][core].attach(conn, session, cookie, as_user(user), now);
    f.settle();
    conn
}

fn directs(lines: &[String]) -> Vec<String> {
    (lines.iter())
        .filter(|l| l.starts_with("direct ") || l.starts_with("gap direct"))
        .cloned()
        .collect()
}

fn count(delivered: u64, held: u64) -> DirectCount {
    DirectCount { delivered, held }
}

#[test]
fn a_direct_message_reaches_a_session_on_another_node() {
    let mut f = Fleet::new(2, 2, 16);
    let id = SessionId::random();
    let a = f.connect(1, id, false);
    f.lines(a);
    assert_eq!(f.direct(0, DirectTarget::Session(id), "one"), count(1, 0));
    assert_eq!(f.direct(1, DirectTarget::Session(id), "two"), count(1, 0));
    assert_eq!(directs(&f.lines(a)), ["direct one", "direct two"]);
    // Numbered and kept by the engine.
    assert_eq!(f.fake.directs[&id].0, 2);
    let nobody = SessionId::random();
    assert_eq!(f.direct(0, DirectTarget::Session(nobody), "x"), count(0, 0));
}

#[test]
fn a_direct_message_to_a_user_reaches_every_tab_on_every_node() {
    let policy = crate::auth::Policy::from_flags(&["*"], &["*"]).unwrap();
    let mut f = Fleet::with_policy(3, 2, 16, Some(Arc::new(policy)));
    let tabs: Vec<(SessionId, ConnId)> = (0..4)
        .map(|i| {
            let id = SessionId::random();
            (id, connect_as(&mut f, i % 2, id, false, "alice"))
        })
        .collect();
    let other = connect_as(&mut f, 2, SessionId::random(), false, "bob");
    // Alice's fourth tab is away: it keeps the message for its resume.
    f.drop_conn(tabs[3].1);
    for (_, conn) in &tabs {
        f.lines(*conn);
    }
    f.lines(other);
    assert_eq!(
        f.direct(2, DirectTarget::User("alice".into()), "hi"),
        count(3, 1)
    );
    for (_, conn) in &tabs[..3] {
        assert_eq!(directs(&f.lines(*conn)), ["direct hi"]);
    }
    assert!(directs(&f.lines(other)).is_empty());
    let back = connect_as(&mut f, 1, tabs[3].0, true, "alice");
    assert_eq!(directs(&f.lines(back)), ["direct hi"]);
    assert_eq!(
        f.direct(0, DirectTarget::User("carol".into()), "x"),
        count(0, 0)
    );
}

#[test]
fn direct_messages_move_with_their_session_to_another_node() {
    let mut f = Fleet::new(2, 2, 2);
    let id = SessionId::random();
    let a = f.connect(0, id, false);
    f.cmd(a, "sub news");
    assert_eq!(f.direct(1, DirectTarget::Session(id), "d1"), count(1, 0));
    f.lines(a);
    f.drop_conn(a);
    let p = f.connect(1, SessionId::random(), false);
    f.cmd(p, "pub news missed");
    for i in 2..=4 {
        assert_eq!(
            f.direct(1, DirectTarget::Session(id), &format!("d{i}")),
            count(0, 1)
        );
    }
    // Back on the other node: the topic's replay, then what it missed of
    // its direct messages (two kept: a gap for the first).
    let b = f.connect(1, id, true);
    let got = f.lines(b);
    let replay = got
        .iter()
        .position(|l| l == "msg news 1 missed")
        .expect("replayed");
    let first = got
        .iter()
        .position(|l| l.starts_with("gap direct"))
        .expect("gap");
    assert!(replay < first, "{got:?}");
    assert_eq!(directs(&got), ["gap direct 2 2", "direct d3", "direct d4"]);
    // The numbering goes on from the engine's.
    assert_eq!(f.direct(0, DirectTarget::Session(id), "d5"), count(1, 0));
    assert_eq!(directs(&f.lines(b)), ["direct d5"]);
    assert_eq!(f.fake.directs[&id].0, 5);
}

#[test]
fn a_session_whose_node_is_gone_keeps_its_direct_messages_in_the_engine() {
    let mut f = Fleet::new(2, 1, 16);
    let id = SessionId::random();
    let a = f.connect(0, id, false);
    f.lines(a);
    f.drop_conn(a);
    // Node 0 is gone (nobody listens on its channel); its save stays.
    f.fake.listeners.remove(&instance(0));
    assert_eq!(f.direct(1, DirectTarget::Session(id), "kept"), count(0, 1));
    let b = f.connect(1, id, true);
    let got = f.lines(b);
    assert!(got[0].contains("resumed"), "{got:?}");
    assert_eq!(directs(&got), ["direct kept"]);
}

#[test]
fn without_the_engine_a_direct_message_reaches_this_node_only() {
    let mut f = Fleet::new(2, 2, 16);
    let here = SessionId::random();
    let there = SessionId::random();
    let a = f.connect(0, here, false);
    let b = f.connect(1, there, false);
    f.lines(a);
    f.lines(b);
    f.set_up(0, false);
    assert_eq!(
        f.direct(0, DirectTarget::Session(here), "local"),
        count(1, 0)
    );
    assert_eq!(
        f.direct(0, DirectTarget::Session(there), "far"),
        count(0, 0)
    );
    assert_eq!(directs(&f.lines(a)), ["direct local"]);
    assert!(directs(&f.lines(b)).is_empty());
    // Back up: numbered above what the node gave meanwhile.
    f.set_up(0, true);
    assert_eq!(
        f.direct(1, DirectTarget::Session(here), "again"),
        count(1, 0)
    );
    assert_eq!(directs(&f.lines(a)), ["direct again"]);
    assert_eq!(f.fake.directs[&here].0, 2);
}
