//! The topic-owner half of the hub: sequence numbers, history, members and
//! fan-out for the topics whose name maps to this core.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use super::{Hub, Msg, Reply, Stored};
use crate::proto::cookie::SessionId;

/// A topic owned by this core.
#[derive(Debug, Default)]
pub(super) struct Topic {
    seq: u64,
    history: VecDeque<Stored>,
    /// Subscribed sessions per core.
    cores: Vec<u32>,
    members: HashSet<SessionId>,
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

    /// Cores with at least one subscriber of the topic.
    fn subscriber_cores(&self, topic: &Arc<str>) -> Vec<usize> {
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
        after: Option<u64>,
    ) {
        let t = self.topic_mut(&topic);
        let current = t.seq;
        // A resuming session is still a member; `insert` only re-adds one the
        // topic forgot, which cannot happen on one node.
        if t.members.insert(session) {
            t.cores[from] += 1;
        }
        let (gap, history) = match after {
            None => (None, Vec::new()),
            Some(last) => {
                let oldest = t.history.front().map_or(current + 1, |m| m.seq);
                let gap = (last + 1 < oldest && last < current).then(|| (last + 1, oldest - 1));
                (
                    gap,
                    t.history.iter().filter(|m| m.seq > last).cloned().collect(),
                )
            }
        };
        let fresh = after.is_none();
        if fresh {
            self.announce(&topic, true, session);
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

    /// A session leaves the topic (unsub, expiry, close 1000).
    pub(super) fn on_unsubscribe(&mut self, topic: Arc<str>, from: usize, session: SessionId) {
        let Some(t) = self.topics.get_mut(&topic) else {
            return;
        };
        if t.members.remove(&session) {
            t.cores[from] = t.cores[from].saturating_sub(1);
            self.announce(&topic, false, session);
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
        let history_size = self.cfg.history_size;
        let t = self.topic_mut(&topic);
        t.seq += 1;
        let seq = t.seq;
        t.history.push_back(Stored {
            seq,
            payload: payload.clone(),
            binary,
        });
        while t.history.len() > history_size {
            t.history.pop_front();
        }
        for core in self.subscriber_cores(&topic) {
            let msg = Msg::Deliver {
                topic: topic.clone(),
                seq,
                payload: payload.clone(),
                binary,
            };
            self.mail(core, msg);
        }
        let (Reply::Session(reply_core, _) | Reply::Admin(reply_core, _)) = reply;
        self.mail(reply_core, Msg::Published { topic, seq, reply });
    }

    /// Answers `who` with the sorted member list.
    pub(super) fn on_who(&mut self, topic: Arc<str>, from: usize, session: SessionId) {
        let mut members: Vec<SessionId> = self
            .topics
            .get(&topic)
            .map(|t| t.members.iter().copied().collect())
            .unwrap_or_default();
        members.sort_by_key(|m| m.to_text());
        self.mail(
            from,
            Msg::Members {
                topic,
                session,
                members,
            },
        );
    }

    /// Sends `join`/`leave` to every core with subscribers of the topic.
    fn announce(&mut self, topic: &Arc<str>, joined: bool, session: SessionId) {
        for core in self.subscriber_cores(topic) {
            self.mail(
                core,
                Msg::Presence {
                    topic: topic.clone(),
                    joined,
                    session,
                },
            );
        }
    }
}
