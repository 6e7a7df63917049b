//! Mail from other cores' hubs (and this one's): deliveries to local
//! subscribers, replays after a resume, presence lines and answers.

use std::num::NonZeroU64;
use std::sync::Arc;

use std::rc::Rc;

use super::{frame_of, text_frame, ConnId, Hub, Msg, Output, Reply, Stored};
use crate::proto::command;
use crate::proto::cookie::SessionId;
use crate::proto::peer::Member;

impl Hub {
    /// A message from another core's hub.
    pub fn receive(&mut self, msg: Msg) {
        self.handle(msg);
        self.run_local();
    }

    pub(super) fn handle(&mut self, msg: Msg) {
        match msg {
            Msg::Subscribe {
                topic,
                from,
                session,
                member,
                after,
            } => self.on_subscribe(topic, from, session, member, after),
            Msg::Unsubscribe {
                topic,
                from,
                member,
                announce,
            } => self.on_unsubscribe(topic, from, member, announce),
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
                member,
            } => self.on_presence(&topic, joined, &member),
            Msg::Members {
                topic,
                session,
                count,
                members,
            } => self.on_members(&topic, session, count, &members),
            Msg::Published { topic, seq, reply } => self.on_published(&topic, seq, reply),
            Msg::Direct {
                target,
                payload,
                binary,
                reply,
            } => self.on_direct(target, payload, binary, reply),
            Msg::DirectDone { reply, count } => self.on_direct_done(reply, count),
        }
    }

    /// `join` / `leave` of `member` to the local subscribers of `topic` but itself.
    fn on_presence(&mut self, topic: &Arc<str>, joined: bool, member: &Member) {
        let Some(list) = self.local_subs.get(topic) else {
            return;
        };
        let frame = text_frame(|l| command::write_presence(l, joined, topic, member));
        let conns: Vec<ConnId> = (list.iter())
            .filter_map(|s| self.sessions.get(s))
            .filter(|s| s.peer != member.peer)
            .filter_map(|s| s.conn())
            .collect();
        for conn in conns {
            self.send(conn, frame.clone());
        }
    }

    /// The answer to `who`.
    fn on_members(&mut self, topic: &str, session: SessionId, count: usize, members: &[Member]) {
        let Some(conn) = self.sessions.get(&session).and_then(|s| s.conn()) else {
            return;
        };
        let frame = text_frame(|l| command::write_members(l, topic, count, members.iter()));
        self.send(conn, frame);
    }

    /// The sequence number a publish got, for its publisher.
    fn on_published(&mut self, topic: &str, seq: u64, reply: Reply) {
        match reply {
            Reply::Session(_, session) => {
                let Some(conn) = self.sessions.get(&session).and_then(|s| s.conn()) else {
                    return;
                };
                let frame = text_frame(|l| command::write_ok(l, "pub", topic, Some(seq)));
                self.send(conn, frame);
            }
            Reply::Admin(_, request) => self.out.push_back(Output::AdminPublished { request, seq }),
        }
    }

    fn on_deliver(&mut self, topic: Arc<str>, seq: u64, payload: Arc<[u8]>, binary: bool) {
        let Some((local, list)) = self.local_subs.get_key_value(&topic) else {
            return;
        };
        // Tag deliveries with this core's own copy of the name: its reference
        // count stays on this core's cache lines, however many subscribers.
        let topic = local.clone();
        let mut conns = Vec::with_capacity(list.len());
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
            let Some(conn) = s.conn.map(NonZeroU64::get) else {
                continue;
            };
            sub.last = seq;
            s.dirty = true;
            conns.push(conn);
        }
        if conns.is_empty() {
            return;
        }
        // Encoded once for every subscriber on this core.
        let mut line = Vec::with_capacity(payload.len() + topic.len() + 24);
        command::write_msg(&mut line, &topic, seq, &payload, binary);
        let frame = frame_of(&line, binary);
        self.out.push_back(Output::Deliver {
            conns,
            frame,
            topic,
            seq,
        });
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
        let Some(conn) = s.conn.map(NonZeroU64::get) else {
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
            frames = replay_frames(&topic, sub.last, gap, &history);
            sub.last = sub.last.max(current);
        }
        for (frame, seq) in frames {
            match seq {
                Some(seq) => self.deliver(conn, frame, &topic, seq),
                None => self.send(conn, frame),
            }
        }
        self.replay_done(session, conn);
    }
}

/// What a resumed subscriber missed after `last`: a `gap` line for what
/// history no longer holds, then the kept messages, each with its seq.
fn replay_frames(
    topic: &str,
    last: u64,
    gap: Option<(u64, u64)>,
    history: &[Stored],
) -> Vec<(Rc<[u8]>, Option<u64>)> {
    let mut frames = Vec::new();
    if let Some((from, to)) = gap.filter(|&(_, to)| to > last) {
        let line = text_frame(|l| command::write_gap(l, topic, from.max(last + 1), to));
        frames.push((line, None));
    }
    for m in history.iter().filter(|m| m.seq > last) {
        let mut line = Vec::with_capacity(m.payload.len() + topic.len() + 24);
        command::write_msg(&mut line, topic, m.seq, &m.payload, m.binary);
        frames.push((frame_of(&line, m.binary), Some(m.seq)));
    }
    frames
}
