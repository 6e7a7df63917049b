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
    /// the stream each frame ends, and its topic and sequence number.
    tags: VecDeque<(u64, Arc<str>, u64)>,
    /// Prune `tags` when it grows to this many; doubles while the peer
    /// lags, back to [`PRUNE_AT`] when it catches up.
    prune_at: usize,
    /// Once the connection is given up: what did not reach the peer.
    lost: Option<Lost>,
}

impl Deliveries {
    /// Notes a message whose frame ends at stream offset `end`. Returns true
    /// when the records should be pruned ([`Deliveries::prune`]).
    pub fn record(&mut self, end: u64, topic: &Arc<str>, seq: u64) -> bool {
        self.tags.push_back((end, topic.clone(), seq));
        self.tags.len() >= self.prune_at.max(PRUNE_AT)
    }

    /// Forgets what the peer has acknowledged (`acked` stream bytes).
    pub fn prune(&mut self, acked: u64) {
        let tags = &mut self.tags;
        while tags.front().is_some_and(|t| t.0 <= acked) {
            tags.pop_front();
        }
        self.prune_at = if tags.len() >= PRUNE_AT / 2 {
            tags.len() * 2
        } else {
            if tags.capacity() > 4 * PRUNE_AT {
                tags.shrink_to(2 * PRUNE_AT); // a lag is over
            }
            PRUNE_AT
        };
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
        for (end, topic, seq) in self.tags.drain(..) {
            if end > delivered && !first.iter().any(|(t, _)| *t == topic) {
                first.push((topic, seq));
            }
        }
        self.tags = VecDeque::new(); // settled: the queue's memory goes too
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
    }
}
