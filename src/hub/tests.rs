//! The hub driven in memory: several cores, FIFO mailboxes, simulated time.

use super::*;
use crate::proto::command::parse;

/// Cores wired together the way the I/O layer wires them.
struct Cluster {
    hubs: Vec<Hub>,
    mailboxes: Vec<VecDeque<Msg>>,
    /// What each connection received, as text lines.
    received: HashMap<ConnId, Vec<String>>,
    /// The session each connection's 101 was completed with.
    accepted: HashMap<ConnId, SessionId>,
    closed: Vec<(ConnId, u16)>,
    admin: Vec<(u64, u64)>,
    /// Direct-message answers: (request, count), one per core asked.
    directs: Vec<(u64, DirectCount)>,
    next_conn: ConnId,
    /// conn → core
    conn_core: HashMap<ConnId, usize>,
    /// Every session id a test used: no line may ever carry one.
    session_ids: Vec<String>,
}

fn payload_text(frame: &[u8]) -> String {
    let (len, start) = match frame[1] & 0x7f {
        126 => (u16::from_be_bytes([frame[2], frame[3]]) as usize, 4),
        127 => (
            u64::from_be_bytes(frame[2..10].try_into().unwrap()) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    assert_eq!(frame.len(), start + len);
    String::from_utf8_lossy(&frame[start..]).into_owned()
}

impl Cluster {
    fn new(cores: usize, history_size: usize) -> Cluster {
        Cluster::with_topics(cores, history_size, 1000, 60_000)
    }

    /// With `--presence-max-members cap` and `--topic-ttl ttl_ms`.
    fn with_topics(cores: usize, history_size: usize, cap: usize, ttl_ms: u64) -> Cluster {
        Cluster {
            hubs: (0..cores)
                .map(|core| {
                    Hub::new(HubConfig {
                        core,
                        cores,
                        node_id: "n1".into(),
                        session_ttl_ms: 10_000,
                        history_size,
                        engine: false,
                        policy: None,
                        presence_cap: cap,
                        topic_ttl_ms: ttl_ms,
                        events: false,
                    })
                })
                .collect(),
            mailboxes: vec![VecDeque::new(); cores],
            received: HashMap::new(),
            accepted: HashMap::new(),
            closed: Vec::new(),
            admin: Vec::new(),
            directs: Vec::new(),
            next_conn: 1,
            conn_core: HashMap::new(),
            session_ids: Vec::new(),
        }
    }

    /// Runs until every mailbox is empty, visiting cores round-robin.
    fn settle(&mut self) {
        loop {
            for core in 0..self.hubs.len() {
                while let Some(out) = self.hubs[core].poll_output() {
                    match out {
                        Output::Send { conn, frame, .. } => {
                            let line = payload_text(&frame);
                            // DESIGN §6: the session id is a bearer secret.
                            for id in &self.session_ids {
                                assert!(!line.contains(id.as_str()), "a session id in {line:?}");
                            }
                            // The 101 is complete before anything else.
                            assert!(self.accepted.contains_key(&conn), "{line:?} before the 101");
                            self.received.entry(conn).or_default().push(line)
                        }
                        Output::Deliver { conns, frame, .. } => {
                            let line = payload_text(&frame);
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
                        Output::Mail { core, msg } => self.mailboxes[core].push_back(msg),
                        Output::AdminPublished { request, seq } => self.admin.push((request, seq)),
                        Output::AdminDirect {
                            request,
                            count,
                            more,
                        } => {
                            assert_eq!(more, 0, "no engine: nothing is forwarded");
                            self.directs.push((request, count))
                        }
                        Output::Engine { .. } => unreachable!("no engine configured"),
                        Output::Connected { .. } => unreachable!("no events hook configured"),
                    }
                }
            }
            let mut any = false;
            for core in 0..self.hubs.len() {
                // One message per core per round: interleaves cores adversarially.
                if let Some(msg) = self.mailboxes[core].pop_front() {
                    self.hubs[core].receive(msg);
                    any = true;
                }
            }
            if !any {
                return;
            }
        }
    }

    fn connect(&mut self, session: SessionId, now: u64) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        let core = session.owner(self.hubs.len());
        self.conn_core.insert(conn, core);
        self.session_ids.push(session.to_string());
        self.hubs[core].attach(conn, session, true, None, now);
        self.settle();
        conn
    }

    /// A connection of `user`'s session.
    fn connect_as(&mut self, session: SessionId, user: &str, now: u64) -> ConnId {
        let conn = self.next_conn;
        self.next_conn += 1;
        let core = session.owner(self.hubs.len());
        self.conn_core.insert(conn, core);
        self.session_ids.push(session.to_string());
        let who = Identity {
            user: user.into(),
            grants: None,
        };
        self.hubs[core].attach(conn, session, true, Some(who), now);
        self.settle();
        conn
    }

    /// A direct message through the admin API of core 0: the summed count
    /// of the cores' answers.
    fn direct(&mut self, target: DirectTarget, text: &str) -> DirectCount {
        self.directs.clear();
        let asked = self.hubs[0].direct_api(7, target, text.as_bytes(), false);
        self.settle();
        assert_eq!(self.directs.len(), asked, "one answer per core asked");
        self.directs
            .iter()
            .fold(DirectCount::default(), |mut sum, (r, c)| {
                assert_eq!(*r, 7);
                sum.delivered += c.delivered;
                sum.held += c.held;
                sum
            })
    }

    fn cmd(&mut self, conn: ConnId, text: &str) {
        let core = self.conn_core[&conn];
        self.hubs[core].command(conn, parse(text.as_bytes(), false).unwrap(), false, 0);
        self.settle();
    }

    fn drop_conn(&mut self, conn: ConnId, now: u64, normal: bool) {
        let core = self.conn_core[&conn];
        self.hubs[core].detach(conn, now, normal, &[]);
        self.settle();
    }

    fn tick(&mut self, now: u64) {
        for hub in &mut self.hubs {
            hub.tick(now);
        }
        self.settle();
    }

    /// The peer id of a session its core holds.
    fn peer(&self, session: SessionId) -> String {
        let core = session.owner(self.hubs.len());
        self.hubs[core].peer_of(session).expect("held").to_string()
    }

    fn lines(&mut self, conn: ConnId) -> Vec<String> {
        self.received.remove(&conn).unwrap_or_default()
    }
}

fn sid() -> SessionId {
    SessionId::random()
}

#[test]
fn new_session_says_hello_new() {
    let mut c = Cluster::new(2, 16);
    let id = sid();
    let conn = c.connect(id, 0);
    let peer = c.peer(id);
    assert!(peer.len() == 16 && peer.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(c.lines(conn), [format!("hello {peer} new n1")]);
}

#[test]
fn every_subscriber_gets_every_message_in_the_same_order() {
    let mut c = Cluster::new(3, 16);
    let ids: Vec<SessionId> = (0..6).map(|_| sid()).collect();
    let conns: Vec<ConnId> = ids.iter().map(|id| c.connect(*id, 0)).collect();
    for conn in &conns {
        c.cmd(*conn, "sub room");
    }
    for conn in &conns {
        c.lines(*conn);
    }
    for (i, conn) in conns.iter().enumerate() {
        c.cmd(*conn, &format!("pub room m{i}"));
    }
    let expected: Vec<String> = (0..6).map(|i| format!("msg room {} m{i}", i + 1)).collect();
    for (i, conn) in conns.iter().enumerate() {
        let lines = c.lines(*conn);
        let msgs: Vec<String> = lines
            .iter()
            .filter(|l| l.starts_with("msg"))
            .cloned()
            .collect();
        assert_eq!(msgs, expected, "subscriber {i}");
        // The publisher also gets its ack, right after its own message.
        let at = lines
            .iter()
            .position(|l| *l == format!("msg room {} m{i}", i + 1))
            .unwrap();
        assert_eq!(lines[at + 1], format!("ok pub room {}", i + 1));
    }
}

#[test]
fn subscribe_acks_with_the_current_sequence_and_announces_a_join() {
    let mut c = Cluster::new(2, 16);
    let (a, b) = (sid(), sid());
    let ca = c.connect(a, 0);
    let pa = c.peer(a);
    let cb = c.connect(b, 0);
    let pb = c.peer(b);
    c.cmd(ca, "sub t");
    c.cmd(ca, "pub t one");
    c.lines(ca);
    c.cmd(cb, "sub t");
    assert_eq!(c.lines(cb)[1], "ok sub t 1");
    assert_eq!(c.lines(ca), [format!("join t {pb}")]);
    c.cmd(cb, "who t");
    let mut ids = [pa.clone(), pb.clone()];
    ids.sort();
    assert_eq!(c.lines(cb), [format!("members t 2 {} {}", ids[0], ids[1])]);
}

#[test]
fn resume_replays_missed_messages_in_order_then_live_ones() {
    let mut c = Cluster::new(2, 16);
    let (a, b) = (sid(), sid());
    let ca = c.connect(a, 0);
    let pa = c.peer(a);
    let cb = c.connect(b, 0);
    c.cmd(ca, "sub t");
    c.cmd(cb, "sub t");
    c.cmd(cb, "pub t 1");
    c.lines(ca);
    c.lines(cb);
    c.drop_conn(ca, 100, false);
    for i in 2..=6 {
        c.cmd(cb, &format!("pub t {i}"));
    }
    let cb_lines = c.lines(cb);
    assert!(
        !cb_lines.iter().any(|l| l.starts_with("leave")),
        "no leave on a drop: {cb_lines:?}"
    );
    let ca2 = c.connect(a, 200);
    c.cmd(cb, "pub t 7");
    let lines = c.lines(ca2);
    let mut expected = vec![format!("hello {pa} resumed n1")];
    expected.extend((2..=7).map(|i| format!("msg t {i} {i}")));
    assert_eq!(lines, expected);
    assert!(
        !c.lines(cb).iter().any(|l| l.starts_with("join")),
        "no join on a resume"
    );
}

#[test]
fn resume_with_nothing_missed_replays_nothing() {
    let mut c = Cluster::new(2, 16);
    let a = sid();
    let ca = c.connect(a, 0);
    let pa = c.peer(a);
    c.cmd(ca, "sub t");
    c.cmd(ca, "pub t x");
    c.drop_conn(ca, 10, false);
    let ca2 = c.connect(a, 20);
    assert_eq!(c.lines(ca2), [format!("hello {pa} resumed n1")]);
}

#[test]
fn gap_when_history_cannot_cover_then_the_newest_history() {
    let mut c = Cluster::new(2, 3);
    let (a, b) = (sid(), sid());
    let ca = c.connect(a, 0);
    let pa = c.peer(a);
    let cb = c.connect(b, 0);
    c.cmd(ca, "sub t");
    c.drop_conn(ca, 1, false);
    for i in 1..=8 {
        c.cmd(cb, &format!("pub t {i}"));
    }
    let ca2 = c.connect(a, 2);
    assert_eq!(
        c.lines(ca2),
        [
            format!("hello {pa} resumed n1"),
            "gap t 1 5".to_string(),
            "msg t 6 6".to_string(),
            "msg t 7 7".to_string(),
            "msg t 8 8".to_string()
        ]
    );
}

#[test]
fn ttl_expiry_emits_leave_and_a_later_reconnect_is_new() {
    let mut c = Cluster::new(2, 16);
    let (a, b) = (sid(), sid());
    let ca = c.connect(a, 0);
    let pa = c.peer(a);
    let cb = c.connect(b, 0);
    c.cmd(ca, "sub t");
    c.cmd(cb, "sub t");
    c.lines(cb);
    c.drop_conn(ca, 1_000, false);
    c.tick(10_999);
    assert!(c.lines(cb).is_empty(), "still inside the TTL");
    c.tick(11_000);
    assert_eq!(c.lines(cb), [format!("leave t {pa}")]);
    let ca2 = c.connect(a, 12_000);
    let fresh = c.peer(a);
    assert_ne!(fresh, pa, "a new session gets a new peer id");
    assert_eq!(c.lines(ca2), [format!("hello {fresh} new n1")]);
}

#[test]
fn close_1000_ends_the_session_at_once() {
    let mut c = Cluster::new(2, 16);
    let (a, b) = (sid(), sid());
    let ca = c.connect(a, 0);
    let pa = c.peer(a);
    let cb = c.connect(b, 0);
    c.cmd(ca, "sub t");
    c.cmd(cb, "sub t");
    c.lines(cb);
    c.drop_conn(ca, 5, true);
    assert_eq!(c.lines(cb), [format!("leave t {pa}")]);
    let owner = a.owner(2);
    assert!(!c.hubs[owner].has_session(a));
}

#[test]
fn a_reconnect_takes_over_an_open_connection() {
    let mut c = Cluster::new(2, 16);
    let a = sid();
    let ca = c.connect(a, 0);
    let pa = c.peer(a);
    c.cmd(ca, "sub t");
    let ca2 = c.connect(a, 1);
    assert_eq!(c.closed, [(ca, 1008)]);
    assert_eq!(c.lines(ca2), [format!("hello {pa} resumed n1")]);
    // The old connection's later detach must not disturb the new one.
    c.drop_conn(ca, 2, false);
    c.cmd(ca2, "pub t hi");
    assert_eq!(c.lines(ca2), ["msg t 1 hi", "ok pub t 1"]);
}

#[test]
fn unsub_stops_delivery_and_announces_leave() {
    let mut c = Cluster::new(2, 16);
    let (a, b) = (sid(), sid());
    let ca = c.connect(a, 0);
    let pa = c.peer(a);
    let cb = c.connect(b, 0);
    c.cmd(ca, "sub t");
    c.cmd(cb, "sub t");
    c.lines(ca);
    c.lines(cb);
    c.cmd(ca, "unsub t");
    assert_eq!(c.lines(ca), ["ok unsub t"]);
    assert_eq!(c.lines(cb), [format!("leave t {pa}")]);
    c.cmd(cb, "pub t x");
    assert!(c.lines(ca).is_empty());
}

#[test]
fn admin_publish_gets_its_sequence_number() {
    let mut c = Cluster::new(2, 16);
    let a = sid();
    let ca = c.connect(a, 0);
    c.cmd(ca, "sub news");
    c.lines(ca);
    c.hubs[0].publish_api(7, "news", b"hello", false);
    c.settle();
    assert_eq!(c.admin, [(7, 1)]);
    assert_eq!(c.lines(ca), ["msg news 1 hello"]);
}

#[test]
fn expired_sessions_are_reclaimed() {
    let mut c = Cluster::new(1, 16);
    for i in 0..100 {
        let conn = c.connect(sid(), i);
        c.drop_conn(conn, i, false);
    }
    assert_eq!(c.hubs[0].session_count(), 100);
    c.tick(1_000_000);
    assert_eq!(c.hubs[0].session_count(), 0);
    assert_eq!(c.hubs[0].stats.sessions_ended, 100);
}

#[test]
fn a_rewind_replays_what_never_reached_the_client() {
    let mut c = Cluster::new(2, 16);
    let (a, b) = (sid(), sid());
    let ca = c.connect(a, 0);
    let pa = c.peer(a);
    let cb = c.connect(b, 0);
    c.cmd(ca, "sub t");
    for i in 1..=5 {
        c.cmd(cb, &format!("pub t {i}"));
    }
    assert_eq!(c.lines(ca).len(), 1 + 1 + 5); // hello, ok sub, 5 messages
                                              // The socket died with messages 4 and 5 still unacknowledged.
    let core = c.conn_core[&ca];
    c.hubs[core].detach(ca, 10, false, &[("t".into(), 4)]);
    c.settle();
    let ca2 = c.connect(a, 20);
    assert_eq!(
        c.lines(ca2),
        [
            format!("hello {pa} resumed n1"),
            "msg t 4 4".into(),
            "msg t 5 5".into()
        ]
    );
}

#[test]
fn poll_timeout_names_the_next_expiry_and_a_return_cancels_it() {
    let mut c = Cluster::new(1, 8);
    assert_eq!(
        c.hubs[0].poll_timeout(),
        None,
        "nothing disconnected: nothing due"
    );
    let (a, b) = (sid(), sid());
    let ca = c.connect(a, 0);
    let cb = c.connect(b, 0);
    c.drop_conn(ca, 1_000, false);
    c.drop_conn(cb, 3_000, false);
    assert_eq!(c.hubs[0].poll_timeout(), Some(11_000));
    // `a` comes back before its TTL and leaves again later: its first
    // deadline passes without ending it.
    let ca = c.connect(a, 5_000);
    c.drop_conn(ca, 6_000, false);
    c.tick(11_000);
    assert!(c.hubs[0].has_session(a), "a left again at 6s: due at 16s");
    assert_eq!(c.hubs[0].poll_timeout(), Some(13_000));
    c.tick(13_000);
    assert!(!c.hubs[0].has_session(b), "b expired at its deadline");
    assert_eq!(c.hubs[0].poll_timeout(), Some(16_000));
    c.tick(15_999);
    assert!(c.hubs[0].has_session(a));
    c.tick(16_000);
    assert!(!c.hubs[0].has_session(a));
    assert_eq!(c.hubs[0].poll_timeout(), None);
}

fn presence_lines(lines: &[String]) -> Vec<String> {
    (lines.iter())
        .filter(|l| l.starts_with("join ") || l.starts_with("leave "))
        .cloned()
        .collect()
}

#[test]
fn presence_stops_above_the_cap_and_who_answers_the_count() {
    let mut c = Cluster::with_topics(2, 16, 3, 60_000);
    let ids: Vec<SessionId> = (0..5).map(|_| sid()).collect();
    let conns: Vec<ConnId> = ids.iter().map(|id| c.connect(*id, 0)).collect();
    for conn in &conns[..3] {
        c.cmd(*conn, "sub t");
    }
    assert_eq!(
        presence_lines(&c.lines(conns[0])).len(),
        2,
        "joins of 2 and 3"
    );
    c.lines(conns[1]);
    c.lines(conns[2]);
    // The 4th member takes the topic above the cap: no join anywhere.
    c.cmd(conns[3], "sub t");
    for conn in &conns[..3] {
        assert!(presence_lines(&c.lines(*conn)).is_empty());
    }
    c.cmd(conns[4], "who t");
    assert_eq!(c.lines(conns[4]).last().unwrap(), "members t 4");
    // 4 -> 3: the leave is from above the cap, no line; 3 -> 2: a line.
    c.cmd(conns[3], "unsub t");
    assert!(presence_lines(&c.lines(conns[0])).is_empty());
    c.cmd(conns[2], "unsub t");
    let peer = c.peer(ids[2]);
    assert_eq!(
        presence_lines(&c.lines(conns[0])),
        [format!("leave t {peer}")]
    );
    c.cmd(conns[4], "who t");
    let members = c.lines(conns[4]);
    assert!(
        members[0].starts_with("members t 2 ") && members[0].split(' ').count() == 5,
        "{members:?}"
    );
    // A dropped (resumable) session still counts.
    c.cmd(conns[3], "sub t");
    c.cmd(conns[4], "sub t");
    c.drop_conn(conns[4], 1, false);
    c.cmd(conns[1], "who t");
    assert_eq!(c.lines(conns[1]).last().unwrap(), "members t 4");
}

#[test]
fn a_cap_of_zero_sends_no_presence_at_all() {
    let mut c = Cluster::with_topics(2, 16, 0, 60_000);
    let (a, b) = (c.connect(sid(), 0), c.connect(sid(), 0));
    c.cmd(a, "who t");
    assert_eq!(c.lines(a).last().unwrap(), "members t 0");
    c.cmd(a, "sub t");
    c.cmd(b, "sub t");
    c.cmd(b, "unsub t");
    assert!(presence_lines(&c.lines(a)).is_empty());
    c.cmd(b, "who t");
    assert_eq!(c.lines(b).last().unwrap(), "members t 1");
}

#[test]
fn a_topic_nobody_needs_is_forgotten_after_its_ttl() {
    let mut c = Cluster::with_topics(2, 16, 1000, 1_000);
    let p = c.connect(sid(), 0);
    c.cmd(p, "pub lonely one");
    assert_eq!(c.lines(p).last().unwrap(), "ok pub lonely 1");
    let held = |c: &Cluster| c.hubs.iter().map(Hub::topic_count).sum::<usize>();
    assert_eq!(held(&c), 1);
    assert!(c.hubs.iter().any(|h| h.poll_timeout().is_some()));
    c.tick(999);
    assert_eq!(held(&c), 1, "not before its ttl");
    c.tick(1_000);
    assert_eq!(held(&c), 0);
    c.cmd(p, "pub lonely two");
    assert_eq!(
        c.lines(p).last().unwrap(),
        "ok pub lonely 1",
        "it starts again"
    );
}

#[test]
fn members_keep_a_topic_even_when_their_socket_is_gone() {
    let mut c = Cluster::with_topics(2, 16, 1000, 1_000);
    let (id, p) = (sid(), c.connect(sid(), 0));
    let s = c.connect(id, 0);
    c.cmd(s, "sub kept");
    c.drop_conn(s, 0, false);
    c.cmd(p, "pub kept one");
    c.tick(5_000); // past the topic's ttl, within the session's
    let s = c.connect(id, 5_000);
    let lines = c.lines(s);
    assert!(lines[0].contains(" resumed "), "{lines:?}");
    assert_eq!(lines.last().unwrap(), "msg kept 1 one");
    // Published again while empty, then left: the later of the two counts.
    c.cmd(s, "unsub kept");
    c.cmd(p, "pub kept two");
    c.tick(5_500);
    c.cmd(p, "pub kept three");
    assert_eq!(c.lines(p).last().unwrap(), "ok pub kept 3");
    c.tick(6_499);
    c.cmd(p, "pub kept four");
    assert_eq!(c.lines(p).last().unwrap(), "ok pub kept 4");
    c.tick(7_600);
    c.cmd(p, "pub kept five");
    assert_eq!(c.lines(p).last().unwrap(), "ok pub kept 1");
}

#[test]
fn a_session_stays_small() {
    // Every subscriber is a session in a map: its size is memory per
    // subscriber (DESIGN §6, topics at scale).
    // Boxed in its table: 104 bytes fit a 112-byte malloc chunk (at 105
    // it takes 128), its one topic inline.
    let size = std::mem::size_of::<super::Session>();
    assert!(size <= 104, "{size}");
    assert!(std::mem::size_of::<super::Sub>() <= 16);
    // One topic inline, a few in a vector: no hash table per session.
    assert!(std::mem::size_of::<super::Subs>() <= 32);
}

fn count(delivered: u64, held: u64) -> DirectCount {
    DirectCount { delivered, held }
}

#[test]
fn a_direct_message_reaches_its_session_only() {
    let mut c = Cluster::new(3, 16);
    let (a, b) = (sid(), sid());
    let ca = c.connect(a, 0);
    let cb = c.connect(b, 0);
    c.lines(ca);
    c.lines(cb);
    assert_eq!(c.direct(DirectTarget::Session(a), "hi a"), count(1, 0));
    assert_eq!(c.lines(ca), ["direct hi a"]);
    assert!(c.lines(cb).is_empty());
    // A session nobody holds: no one reached, nothing kept.
    assert_eq!(c.direct(DirectTarget::Session(sid()), "x"), count(0, 0));
}

#[test]
fn every_session_of_a_user_gets_it_on_every_core() {
    let mut c = Cluster::new(3, 16);
    // Two tabs of user 42 (sessions most likely on two cores), one of 7.
    let (t1, t2, other) = (sid(), sid(), sid());
    let c1 = c.connect_as(t1, "42", 0);
    let c2 = c.connect_as(t2, "42", 0);
    let c3 = c.connect_as(other, "7", 0);
    for conn in [c1, c2, c3] {
        c.lines(conn);
    }
    assert_eq!(
        c.direct(DirectTarget::User("42".into()), "ping"),
        count(2, 0)
    );
    assert_eq!(c.lines(c1), ["direct ping"]);
    assert_eq!(c.lines(c2), ["direct ping"]);
    assert!(c.lines(c3).is_empty());
    assert_eq!(
        c.direct(DirectTarget::User("nobody".into()), "x"),
        count(0, 0)
    );
}

#[test]
fn a_resume_gets_the_direct_messages_it_missed_after_its_topics_replay() {
    let mut c = Cluster::new(2, 16);
    let (a, b) = (sid(), sid());
    let ca = c.connect(a, 0);
    let pa = c.peer(a);
    let cb = c.connect(b, 0);
    c.cmd(ca, "sub t");
    c.cmd(ca, "sub u");
    c.lines(ca);
    assert_eq!(c.direct(DirectTarget::Session(a), "d1"), count(1, 0));
    c.drop_conn(ca, 10, false);
    c.cmd(cb, "pub t m1");
    c.cmd(cb, "pub u m2");
    assert_eq!(c.direct(DirectTarget::Session(a), "d2"), count(0, 1));
    assert_eq!(c.direct(DirectTarget::Session(a), "d3"), count(0, 1));
    let ca2 = c.connect(a, 20);
    let lines = c.lines(ca2);
    assert_eq!(lines[0], format!("hello {pa} resumed n1"));
    // The topics' replay (in whatever order their owners answer), then the
    // direct messages it missed, in order, once.
    let mut topics = lines[1..3].to_vec();
    topics.sort();
    assert_eq!(topics, ["msg t 1 m1", "msg u 1 m2"]);
    assert_eq!(lines[3..], ["direct d2", "direct d3"]);
    // Live again: delivered at once, and nothing replayed twice.
    assert_eq!(c.direct(DirectTarget::Session(a), "d4"), count(1, 0));
    assert_eq!(c.lines(ca2), ["direct d4"]);
}

#[test]
fn direct_messages_past_the_history_are_a_gap() {
    let mut c = Cluster::new(1, 3);
    let a = sid();
    let ca = c.connect(a, 0);
    c.lines(ca);
    c.drop_conn(ca, 10, false);
    for i in 1..=5 {
        assert_eq!(
            c.direct(DirectTarget::Session(a), &format!("d{i}")),
            count(0, 1)
        );
    }
    let ca2 = c.connect(a, 20);
    let lines = c.lines(ca2);
    assert_eq!(
        lines[1..],
        ["gap direct 1 2", "direct d3", "direct d4", "direct d5"]
    );
}

#[test]
fn a_direct_message_the_socket_lost_comes_again_on_resume() {
    let mut c = Cluster::new(1, 16);
    let a = sid();
    let ca = c.connect(a, 0);
    c.lines(ca);
    for i in 1..=3 {
        c.direct(DirectTarget::Session(a), &format!("d{i}"));
    }
    assert_eq!(c.lines(ca), ["direct d1", "direct d2", "direct d3"]);
    // The socket died with d2 and d3 unacknowledged.
    c.hubs[0].detach(ca, 10, false, &[(DIRECT_TAG.into(), 2)]);
    c.settle();
    let ca2 = c.connect(a, 20);
    assert_eq!(c.lines(ca2)[1..], ["direct d2", "direct d3"]);
}

#[test]
fn an_ended_session_forgets_its_direct_messages() {
    let mut c = Cluster::new(1, 16);
    let a = sid();
    let ca = c.connect(a, 0);
    c.drop_conn(ca, 10, false);
    assert_eq!(c.direct(DirectTarget::Session(a), "kept"), count(0, 1));
    c.tick(10 + 10_000 + 1); // past --session-ttl
    assert_eq!(c.direct(DirectTarget::Session(a), "late"), count(0, 0));
    let ca2 = c.connect(a, 20_000);
    assert!(c.lines(ca2)[0].ends_with(" new n1"));
    assert_eq!(c.lines(ca2).len(), 0);
}

#[test]
fn a_storm_of_output_is_given_back_once_it_is_out() {
    let mut c = Cluster::new(1, 16);
    let conns: Vec<ConnId> = (0..200)
        .map(|_| c.connect(SessionId::random(), 1))
        .collect();
    for &conn in &conns {
        c.cmd(conn, "sub room");
    }
    let hub = &mut c.hubs[0];
    assert!(hub.out.is_empty(), "everything was carried out");
    assert!(hub.out.capacity() > IDLE_QUEUE, "the storm grew the queue");
    hub.shrink_idle_queues();
    assert!(hub.out.capacity() <= IDLE_QUEUE);
    // Nothing was lost meanwhile: the first member saw every later join.
    let first = &c.received[&conns[0]];
    assert_eq!(
        first.iter().filter(|l| l.starts_with("join room ")).count(),
        199
    );
}
