//! The topic-owner half of the hub: sequence numbers, history, members and
//! fan-out for the topics whose name maps to this core.

use std::cmp::Reverse;
use std::collections::VecDeque;
use std::sync::Arc;

use super::members::Members;
use super::{EngineOp, Hub, Msg, Reply, Stored, Wait};
use crate::proto::cookie::SessionId;
use crate::proto::peer::Member;

/// A topic owned by this core.
#[derive(Debug, Default)]
pub(super) struct Topic {
    pub(super) seq: u64,
    history: VecDeque<Stored>,
    /// Subscribed sessions per core.
    cores: Vec<u32>,
    /// Member sessions by peer id (one per session; 8 bytes where the
    /// session id takes 16, in a table with an entry per subscriber), and
    /// their users with authentication on.
    members: Members,
    /// With an engine: this copy mirrors the engine's (its channel is
    /// subscribed and its history loaded). Without one, always false.
    pub(super) synced: bool,
    /// A sync is in flight; `waiting` holds the subscribes (and the `who`s
    /// behind them) it holds back.
    pub(super) syncing: bool,
    pub(super) waiting: Vec<Msg>,
    /// Without members: since when (ms; the last member left, or the last
    /// publish, whichever is later). `--topic-ttl` after it, it is forgotten.
    idle_since: u64,
    /// An entry of the hub's `topic_expiries` names this topic.
    queued: bool,
}

impl Topic {
    /// What a subscriber that got everything up to `last` missed: the hole
    /// history no longer covers, and the kept messages after `last`.
    fn since(&self, last: u64) -> (Option<(u64, u64)>, Vec<Stored>) {
        let current = self.seq;
        let oldest = self.history.front().map_or(current + 1, |m| m.seq);
        let gap = (last + 1 < oldest && last < current).then(|| (last + 1, oldest - 1));
        let kept = self
            .history
            .iter()
            .filter(|m| m.seq > last)
            .cloned()
            .collect();
        (gap, kept)
    }

    /// Whether any core of this node has a subscriber.
    pub(super) fn has_subscribers(&self) -> bool {
        self.cores.iter().any(|&n| n > 0)
    }
}

/// The core that owns a topic: FNV-1a of its name.
pub fn topic_owner(topic: &str, cores: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % cores.max(1) as u64) as usize
}

impl Hub {
    fn topic_mut(&mut self, topic: &Arc<str>) -> &mut Topic {
        let cores = self.cfg.cores;
        self.topics.entry(topic.clone()).or_insert_with(|| Topic {
            cores: vec![0; cores],
            ..Default::default()
        })
    }

    /// Whether the engine answers for this topic now (else: node-local).
    fn engine_serves(&self) -> bool {
        self.cfg.engine && self.engine_up
    }

    /// Cores with at least one subscriber of the topic.
    pub(super) fn subscriber_cores(&self, topic: &Arc<str>) -> Vec<usize> {
        match self.topics.get(topic) {
            Some(t) => (0..self.cfg.cores).filter(|&c| t.cores[c] > 0).collect(),
            None => Vec::new(),
        }
    }

    /// A session subscribes (`after: None`) or resumes after `after`.
    pub(super) fn on_subscribe(
        &mut self,
        topic: Arc<str>,
        from: usize,
        session: SessionId,
        member: Member,
        after: Option<u64>,
    ) {
        let engine = self.engine_serves();
        let cap = self.cfg.presence_cap;
        let t = self.topic_mut(&topic);
        if engine && !t.synced {
            // Mirror the engine's copy first: subscribe to its channel and
            // load seq and history, then answer from the mirror.
            t.waiting.push(Msg::Subscribe {
                topic: topic.clone(),
                from,
                session,
                member,
                after,
            });
            if !t.syncing {
                t.syncing = true;
                let floor = t.seq;
                self.ask(Wait::Sync(topic.clone()), EngineOp::Sync { topic, floor });
            }
            return;
        }
        let current = t.seq;
        // A resuming session is still a member; `insert` only re-adds one the
        // topic forgot, which cannot happen on one node.
        if t.members.insert(member.peer, member.user.clone()) {
            t.cores[from] += 1;
        }
        // Presence is bounded: above the cap, no `join` lines.
        let within_cap = t.members.len() <= cap;
        let (gap, history) = after.map_or((None, Vec::new()), |last| t.since(last));
        let fresh = after.is_none();
        if fresh {
            if engine {
                // Comes back through the topic's channel, to every node.
                let op = EngineOp::Join {
                    topic: topic.clone(),
                    member,
                };
                self.ask(Wait::Forget, op);
            } else if within_cap {
                self.announce(&topic, true, &member);
            }
        }
        self.mail(
            from,
            Msg::Subscribed {
                topic,
                session,
                fresh,
                current,
                gap,
                history,
            },
        );
    }

    /// A session leaves the topic (unsub, expiry, close 1000, or moved to
    /// another node when `announce` is false).
    pub(super) fn on_unsubscribe(
        &mut self,
        topic: Arc<str>,
        from: usize,
        member: Member,
        announce: bool,
    ) {
        let engine = self.engine_serves();
        let cap = self.cfg.presence_cap;
        let Some(t) = self.topics.get_mut(&topic) else {
            if engine && announce {
                let op = EngineOp::Leave { topic, member };
                self.ask(Wait::Forget, op);
            }
            return;
        };
        // Presence is bounded: a leave from above the cap sends no line.
        let within_cap = t.members.len() <= cap;
        if !t.members.remove(&member.peer) {
            return;
        }
        t.cores[from] = t.cores[from].saturating_sub(1);
        let unwatched = engine && !t.has_subscribers() && !t.syncing;
        if t.members.is_empty() && !unwatched {
            let now = self.clock;
            self.idle_topic(&topic, now);
        }
        if unwatched {
            // Nobody here listens any more: the engine keeps the topic.
            self.topics.remove(&topic);
            self.ask(Wait::Forget, EngineOp::Unwatch(topic.clone()));
        }
        if announce {
            if engine {
                let op = EngineOp::Leave { topic, member };
                self.ask(Wait::Forget, op);
            } else if within_cap {
                self.announce(&topic, false, &member);
            }
        }
    }

    /// Assigns the next sequence number, keeps the message, fans it out to
    /// the cores with subscribers, then tells the publisher its number.
    pub(super) fn on_publish(
        &mut self,
        topic: Arc<str>,
        payload: Arc<[u8]>,
        binary: bool,
        reply: Reply,
    ) {
        if self.engine_serves() {
            // The engine numbers it and fans it out to every node's
            // subscribers through the topic's channel (this node included).
            let floor = self.topics.get(&topic).map_or(0, |t| t.seq);
            let op = EngineOp::Publish {
                topic: topic.clone(),
                payload: payload.clone(),
                binary,
                floor,
            };
            let wait = Wait::Publish {
                topic,
                payload,
                binary,
                reply,
            };
            self.ask(wait, op);
            return;
        }
        self.publish_here(topic, payload, binary, reply);
    }

    /// Numbers, keeps and fans out a message on this node alone (no engine,
    /// or the engine is unreachable).
    pub(super) fn publish_here(
        &mut self,
        topic: Arc<str>,
        payload: Arc<[u8]>,
        binary: bool,
        reply: Reply,
    ) {
        let seq = self.topic_mut(&topic).seq + 1;
        self.keep_and_fan_out(
            &topic,
            Stored {
                seq,
                payload,
                binary,
            },
        );
        self.published(topic, seq, reply);
    }

    /// Appends a message numbered above the topic's seq to its history
    /// (capped at `--history-size`) and sends it to every core with subscribers.
    fn keep_and_fan_out(&mut self, topic: &Arc<str>, m: Stored) {
        let history_size = self.cfg.history_size;
        let t = self.topic_mut(topic);
        t.seq = m.seq;
        t.history.push_back(m.clone());
        while t.history.len() > history_size {
            t.history.pop_front();
        }
        if t.members.is_empty() {
            let now = self.clock;
            self.idle_topic(topic, now);
        }
        self.fan_out(topic, &m);
    }

    /// A topic without members was left or published to at `now`: it is
    /// forgotten `--topic-ttl` later unless a member comes first.
    fn idle_topic(&mut self, topic: &Arc<str>, now: u64) {
        let ttl = self.cfg.topic_ttl_ms;
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        t.idle_since = now;
        if !t.queued {
            t.queued = true;
            self.topic_expiries
                .push(Reverse((now + ttl, topic.clone())));
        }
    }

    /// Forgets the topics whose `--topic-ttl` ran out without a member:
    /// their sequence and history go (a later publish starts at seq 1).
    pub(super) fn expire_topics(&mut self, now: u64) {
        let ttl = self.cfg.topic_ttl_ms;
        while let Some(Reverse((due, _))) = self.topic_expiries.peek() {
            if *due > now {
                break;
            }
            let Some(Reverse((_, topic))) = self.topic_expiries.pop() else {
                break;
            };
            let Some(t) = self.topics.get_mut(&topic) else {
                continue;
            };
            t.queued = false;
            if !t.members.is_empty() || t.syncing || !t.waiting.is_empty() {
                continue; // in use again: queued anew when it empties
            }
            let due = t.idle_since + ttl;
            if due > now {
                // Published or left again meanwhile: look again then.
                t.queued = true;
                self.topic_expiries.push(Reverse((due, topic)));
                continue;
            }
            self.topics.remove(&topic);
            self.topics_freed += 1;
        }
        if self.topic_expiries.capacity() > 64
            && self.topic_expiries.len() < self.topic_expiries.capacity() / 4
        {
            self.topic_expiries.shrink_to_fit();
        }
        // The table many topics grew is given back once they are gone.
        if self.topics.capacity() > 64 && self.topics.len() < self.topics.capacity() / 4 {
            self.topics.shrink_to_fit();
        }
    }

    /// When the next topic may be due (ms).
    pub(super) fn next_topic_expiry(&self) -> Option<u64> {
        self.topic_expiries.peek().map(|Reverse((due, _))| *due)
    }

    /// Tells the publisher its sequence number.
    pub(super) fn published(&mut self, topic: Arc<str>, seq: u64, reply: Reply) {
        let (Reply::Session(reply_core, _) | Reply::Admin(reply_core, _)) = reply;
        self.mail(reply_core, Msg::Published { topic, seq, reply });
    }

    /// A message the engine fanned out: mirror it and deliver it here.
    pub(super) fn on_engine_message(&mut self, topic: Arc<str>, m: Stored) {
        let Some(t) = self.topics.get(&topic) else {
            return;
        };
        // Before the sync answers, the history it loads covers this message.
        if !t.synced || m.seq <= t.seq {
            return;
        }
        self.keep_and_fan_out(&topic, m);
    }

    fn fan_out(&mut self, topic: &Arc<str>, m: &Stored) {
        for core in self.subscriber_cores(topic) {
            let msg = Msg::Deliver {
                topic: topic.clone(),
                seq: m.seq,
                payload: m.payload.clone(),
                binary: m.binary,
            };
            self.mail(core, msg);
        }
    }

    /// The engine's seq and history for a topic: the mirror catches up (after
    /// an outage, what was published elsewhere is delivered here now), then
    /// the held-back subscribes are answered.
    pub(super) fn on_synced(&mut self, topic: Arc<str>, synced: Option<(u64, Vec<Stored>)>) {
        let history_size = self.cfg.history_size;
        let Some(t) = self.topics.get_mut(&topic) else {
            return;
        };
        t.syncing = false;
        // A failed sync serves the local copy; the next engine_status(true)
        // syncs again.
        t.synced = true;
        let mut fresh = Vec::new();
        if let Some((seq, history)) = synced {
            for m in history {
                if m.seq > t.seq {
                    t.seq = m.seq;
                    t.history.push_back(m.clone());
                    fresh.push(m);
                }
            }
            t.seq = t.seq.max(seq);
            while t.history.len() > history_size {
                t.history.pop_front();
            }
        }
        let waiting = std::mem::take(&mut t.waiting);
        for m in &fresh {
            self.fan_out(&topic, m);
        }
        for msg in waiting {
            self.handle(msg);
        }
    }

    /// Answers `who` with the sorted member list (the engine's, fleet-wide,
    /// when it serves).
    pub(super) fn on_who(&mut self, topic: Arc<str>, from: usize, session: SessionId) {
        if self.engine_serves() {
            if let Some(t) = self.topics.get_mut(&topic).filter(|t| t.syncing) {
                // A subscribe ahead of it waits for the sync: so does the
                // `who` (else the engine answers before the member is in).
                t.waiting.push(Msg::Who {
                    topic,
                    from,
                    session,
                });
                return;
            }
            let wait = Wait::Who {
                topic: topic.clone(),
                from,
                session,
            };
            self.ask(wait, EngineOp::Who(topic));
            return;
        }
        self.who_here(topic, from, session);
    }

    /// Answers `who` from this node's members.
    pub(super) fn who_here(&mut self, topic: Arc<str>, from: usize, session: SessionId) {
        let cap = self.cfg.presence_cap;
        let (count, members) = match self.topics.get(&topic) {
            Some(t) if t.members.len() > cap => (t.members.len(), Vec::new()),
            Some(t) => {
                let members = (t.members.iter())
                    .map(|(peer, user)| Member::new(peer, user.cloned()))
                    .collect();
                (t.members.len(), members)
            }
            None => (0, Vec::new()),
        };
        self.answer_who(topic, from, session, count, members);
    }

    /// Sends the sorted member list to the asking session's core.
    pub(super) fn answer_who(
        &mut self,
        topic: Arc<str>,
        from: usize,
        session: SessionId,
        count: usize,
        mut members: Vec<Member>,
    ) {
        // Numeric order is the order of the fixed-width hex text.
        members.sort_by_key(|m| m.peer);
        self.mail(
            from,
            Msg::Members {
                topic,
                session,
                count,
                members,
            },
        );
    }

    /// Sends `join`/`leave` to every core with subscribers of the topic.
    pub(super) fn announce(&mut self, topic: &Arc<str>, joined: bool, member: &Member) {
        for core in self.subscriber_cores(topic) {
            self.mail(
                core,
                Msg::Presence {
                    topic: topic.clone(),
                    joined,
                    member: member.clone(),
                },
            );
        }
    }
}
