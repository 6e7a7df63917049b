//! Which delivered messages a connection's peer may not have received: the
//! record that lets a resume replay exactly what a dropped socket lost.
//!
//! Each delivered `msg` frame is noted with where in the connection's byte
//! stream it ends. When the socket is given up, everything past what the
//! peer's TCP acknowledged counts as lost, and the session rewinds to the
//! first lost message of each topic.

use std::collections::VecDeque;
use std::sync::Arc;

/// Per topic, the first message that never reached the peer.
pub type Lost = Vec<(Arc<str>, u64)>;

/// Records kept before asking the kernel what the peer acknowledged: 64
/// records (2 KiB) per busy subscriber, one ioctl per 64 deliveries.
const PRUNE_AT: usize = 64;

/// A connection's delivery records (allocated on its first delivery).
#[derive(Default)]
pub struct Deliveries {
    /// Delivered messages not yet known to have reached the peer: where in
    /// the stream each frame ends, its sequence number, and its topic (an
    /// index into `topics`: recording a delivery touches no reference count).
    tags: VecDeque<Tag>,
    /// The topics the tags name (a fan-out delivers mostly one topic to a
    /// connection at a time: the last one used is checked first).
    topics: Vec<Arc<str>>,
    /// Index of the topic recorded last.
    last: usize,
    /// Compact `topics` when it grows beyond this many (doubles while the
    /// records name that many, like `prune_at`).
    topics_at: usize,
    /// Prune `tags` when it grows to this many; doubles while the peer
    /// lags, back to [`PRUNE_AT`] when it catches up.
    prune_at: usize,
    /// Once the connection is given up: what did not reach the peer.
    lost: Option<Lost>,
}

/// One delivered message: where its frame ends in the stream, its seq,
/// and its topic's index.
#[derive(Clone, Copy)]
struct Tag {
    end: u64,
    seq: u64,
    topic: u32,
}

/// Beyond this many distinct topics in the records, they are compacted to
/// the ones still named when pruned.
const TOPICS_AT: usize = 64;

impl Deliveries {
    /// Notes a message whose frame ends at stream offset `end`. Returns true
    /// when the records should be pruned ([`Deliveries::prune`]).
    pub fn record(&mut self, end: u64, topic: &Arc<str>, seq: u64) -> bool {
        let topic = self.topic_index(topic);
        self.tags.push_back(Tag { end, seq, topic });
        self.tags.len() >= self.prune_at.max(PRUNE_AT)
            || self.topics.len() > self.topics_at.max(TOPICS_AT)
    }

    fn topic_index(&mut self, topic: &Arc<str>) -> u32 {
        if let Some(t) = self.topics.get(self.last) {
            if Arc::ptr_eq(t, topic) || **t == **topic {
                return self.last as u32;
            }
        }
        let at = match self
            .topics
            .iter()
            .position(|t| Arc::ptr_eq(t, topic) || **t == **topic)
        {
            Some(at) => at,
            None => {
                self.topics.push(topic.clone());
                self.topics.len() - 1
            }
        };
        self.last = at;
        at as u32
    }

    /// Forgets what the peer has acknowledged (`acked` stream bytes).
    pub fn prune(&mut self, acked: u64) {
        let tags = &mut self.tags;
        while tags.front().is_some_and(|t| t.end <= acked) {
            tags.pop_front();
        }
        if tags.is_empty() {
            self.topics.clear();
            self.last = 0;
        } else if self.topics.len() > self.topics_at.max(TOPICS_AT) {
            self.compact_topics();
        }
        self.topics_at = (2 * self.topics.len()).max(TOPICS_AT);
        let tags = &mut self.tags;
        self.prune_at = if tags.len() >= PRUNE_AT / 2 {
            tags.len() * 2
        } else {
            if tags.capacity() > 4 * PRUNE_AT {
                tags.shrink_to(2 * PRUNE_AT); // a lag is over
            }
            PRUNE_AT
        };
    }

    /// Keeps only the topics the remaining tags name.
    fn compact_topics(&mut self) {
        let mut map = vec![u32::MAX; self.topics.len()];
        let mut kept: Vec<Arc<str>> = Vec::new();
        for tag in self.tags.iter_mut() {
            let old = tag.topic as usize;
            if map[old] == u32::MAX {
                map[old] = kept.len() as u32;
                kept.push(self.topics[old].clone());
            }
            tag.topic = map[old];
        }
        self.topics = kept;
        self.last = 0;
    }

    /// Whether no delivery waits for the peer's acknowledgement.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.lost.is_none()
    }

    /// Whether [`Deliveries::settle`] has run.
    pub fn is_settled(&self) -> bool {
        self.lost.is_some()
    }

    /// Works out, once, which messages never reached the peer, counting the
    /// first `delivered` bytes of the stream as delivered.
    pub fn settle(&mut self, delivered: u64) {
        if self.lost.is_some() {
            return;
        }
        let mut first: Lost = Vec::new();
        let mut seen = vec![false; self.topics.len()];
        for tag in self.tags.drain(..) {
            let t = tag.topic as usize;
            if tag.end > delivered && !seen[t] {
                seen[t] = true;
                first.push((self.topics[t].clone(), tag.seq));
            }
        }
        // Settled: the records' memory goes too.
        self.tags = VecDeque::new();
        self.topics = Vec::new();
        self.lost = Some(first);
    }

    /// What [`Deliveries::settle`] found (empty if it has not run).
    pub fn take_lost(&mut self) -> Lost {
        self.lost.take().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unacknowledged_messages_are_lost_first_per_topic() {
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let mut d = Deliveries::default();
        d.record(100, &a, 1);
        d.record(200, &a, 2);
        d.record(300, &b, 7);
        d.record(400, &a, 3);
        d.settle(200);
        assert!(d.is_settled());
        assert_eq!(d.take_lost(), vec![(b.clone(), 7), (a.clone(), 3)]);
        // Settling again changes nothing.
        d.settle(0);
        assert!(d.take_lost().is_empty());
    }

    #[test]
    fn pruning_keeps_what_is_unacknowledged_and_backs_off_while_lagging() {
        let t: Arc<str> = "t".into();
        let mut d = Deliveries::default();
        let mut due = false;
        for seq in 1..=PRUNE_AT as u64 {
            due = d.record(seq * 10, &t, seq);
        }
        assert!(due, "prune is asked for at {PRUNE_AT} records");
        d.prune(10 * PRUNE_AT as u64 / 4);
        assert_eq!(d.tags.len(), PRUNE_AT * 3 / 4);
        assert_eq!(
            d.prune_at,
            PRUNE_AT * 3 / 2,
            "a lagging peer is pruned less often"
        );
        d.prune(u64::MAX);
        assert_eq!((d.tags.len(), d.prune_at), (0, PRUNE_AT));
        assert!(d.topics.is_empty(), "no record: no topic kept");
    }

    #[test]
    fn many_topics_are_compacted_to_those_still_named() {
        let mut d = Deliveries::default();
        let names: Vec<Arc<str>> = (0..200).map(|i| Arc::from(format!("t{i}"))).collect();
        let mut due = false;
        for (i, t) in names.iter().enumerate() {
            due |= d.record(10 * (i as u64 + 1), t, 1);
        }
        assert!(due);
        d.prune(10 * 150); // the first 150 reached the peer
        assert_eq!(d.topics.len(), 50);
        d.settle(10 * 160);
        let lost = d.take_lost();
        assert_eq!(lost.len(), 40);
        assert_eq!(&*lost[0].0, "t160");
    }
}
