//! The pipeline of requests to the shared engine on one core's
//! connections: the hub's requests are encoded and written in batches;
//! answers come back in order and are matched to the oldest request waiting
//! on that connection. Sans-IO: bytes out, values in, time as input (ms).
//!
//! One Redis server is one *lane*. With Redis Cluster there is a lane per
//! primary: a request goes to the lane serving its key's slot
//! ([`Schema::slot_of`], [`SlotMap`]); one that touches no key to lane 0.
//! A `MOVED` answer updates the map and sends the request again to the
//! right lane, an `ASK` answer sends it once to the lane named, behind
//! `ASKING`; a redirect to a server that is not a lane, or one the pipeline
//! cannot place (a topic's sync, whose sharded subscription must move
//! too), asks for the whole map to be read again ([`Answer::Rediscover`]).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::cluster::{Redirect, SlotMap};
use super::schema::{channel, Expect, Schema};
use crate::hub::{EngineOp, EngineReply};
use crate::proto::resp::{encode_command, Value};

struct Waiting {
    /// The hub's request id.
    id: u64,
    expect: Expect,
    sent_at: u64,
    /// Cluster only: the slot and the encoded command, to send it again
    /// where a redirect says.
    resend: Option<(u16, Arc<[u8]>)>,
    /// Sent behind `ASKING` (an `ASK` redirect): so is a retry.
    asking: bool,
}

/// An answer arrived that no request waits for: the stream is out of step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unexpected;

/// What an answer means.
#[derive(Debug)]
pub enum Answer {
    /// The reply to the hub's request `id`.
    Reply(u64, EngineReply),
    /// Nothing for the hub (the `OK` of an `ASKING`).
    Skip,
    /// The request was sent again elsewhere (`ask`: after `ASKING`).
    Redirected {
        /// `ASK` rather than `MOVED`.
        ask: bool,
    },
    /// `TRYAGAIN` (keys of a slot in the middle of a migration): sent again
    /// to the same server [`RETRY_MS`] later ([`Pipeline::resend_due`]),
    /// until `--redis-timeout` from its first sending.
    Retried,
    /// The cluster changed beyond what a redirect fixes: read the map again
    /// (the caller reconnects).
    Rediscover(String),
}

#[derive(Default)]
struct Lane {
    /// Encoded commands not yet written.
    out: Vec<u8>,
    /// Requests whose answer has not arrived, oldest first.
    waiting: VecDeque<Waiting>,
}

/// One core's requests to the engine.
pub struct Pipeline {
    schema: Arc<Schema>,
    up: bool,
    lanes: Vec<Lane>,
    /// Redis Cluster: which lane serves which slot.
    map: Option<SlotMap>,
    /// Cluster: requests to send again at a time (ms), on a lane
    /// (`TRYAGAIN`).
    later: Vec<(u64, usize, Waiting)>,
    /// Cluster: sharded unsubscribes asked for and not yet confirmed, by
    /// channel (any other confirmation is the server dropping a channel
    /// whose slot moved).
    unwatching: HashMap<Vec<u8>, u32>,
}

impl Pipeline {
    /// An empty pipeline, down until [`Pipeline::connected`].
    pub fn new(schema: Arc<Schema>) -> Pipeline {
        Pipeline {
            schema,
            up: false,
            lanes: Vec::new(),
            map: None,
            later: Vec::new(),
            unwatching: HashMap::new(),
        }
    }

    /// The schema (scripts to load on a new connection).
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Whether the connection is up.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The connection (one lane) is ready for requests.
    pub fn connected(&mut self) {
        self.connected_cluster(None, 1);
    }

    /// The connections are ready: one lane per primary of `map` (or
    /// `lanes` without a map).
    pub fn connected_cluster(&mut self, map: Option<SlotMap>, lanes: usize) {
        let n = map.as_ref().map_or(lanes, |m| m.primaries().len()).max(1);
        self.lanes = (0..n).map(|_| Lane::default()).collect();
        self.map = map;
        self.up = true;
    }

    /// How many lanes (connections) there are.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// The connections are gone: returns the ids of every request that
    /// waited (each must be answered `Failed`); what was not written is
    /// dropped.
    pub fn disconnected(&mut self) -> Vec<u64> {
        self.up = false;
        self.map = None;
        self.unwatching.clear();
        let mut ids = Vec::new();
        for lane in self.lanes.drain(..) {
            ids.extend(lane.waiting.into_iter().map(|w| w.id));
        }
        ids.extend(self.later.drain(..).map(|(_, _, w)| w.id));
        ids.retain(|&id| id != SKIP);
        ids
    }

    /// Queues request `id` at time `now`. `false` when the connection is
    /// down: the caller answers the hub with `Failed` at once.
    pub fn submit(&mut self, id: u64, op: &EngineOp, now: u64) -> bool {
        if !self.up {
            return false;
        }
        let Some(map) = &self.map else {
            let lane = &mut self.lanes[0];
            let expect = self.schema.encode(op, &mut lane.out);
            if expect != Expect::Nothing {
                let resend = None;
                (lane.waiting).push_back(Waiting {
                    id,
                    expect,
                    sent_at: now,
                    resend,
                    asking: false,
                });
            }
            return true;
        };
        let slot = self.schema.slot_of(op);
        let lane = slot.map_or(0, |s| map.lane(s));
        if let EngineOp::Unwatch(topic) = op {
            *(self.unwatching)
                .entry(channel(topic).into_bytes())
                .or_default() += 1;
        }
        let mut cmd = Vec::new();
        let expect = self.schema.encode(op, &mut cmd);
        let lane = &mut self.lanes[lane];
        lane.out.extend_from_slice(&cmd);
        if expect != Expect::Nothing {
            let resend = slot.map(|s| (s, Arc::from(cmd)));
            (lane.waiting).push_back(Waiting {
                id,
                expect,
                sent_at: now,
                resend,
                asking: false,
            });
        }
        true
    }

    /// A push that says a sharded subscription ended that nobody asked to
    /// end (the cluster moved its slot): its channel. `None` for anything
    /// else, the confirmation of an unsubscribe asked for included.
    pub fn dropped_subscription(&mut self, push: &[Value]) -> Option<String> {
        let [kind, channel, _] = push else {
            return None;
        };
        if self.map.is_none() || kind.as_bytes()? != b"sunsubscribe" {
            return None;
        }
        let channel = channel.as_bytes()?;
        match self.unwatching.get_mut(channel) {
            Some(n) if *n > 1 => *n -= 1,
            Some(_) => {
                self.unwatching.remove(channel);
            }
            None => return Some(String::from_utf8_lossy(channel).into_owned()),
        }
        None
    }

    /// Bytes waiting to be written on `lane`.
    pub fn output(&self, lane: usize) -> &[u8] {
        self.lanes.get(lane).map_or(&[], |l| &l.out)
    }

    /// Whether any lane has bytes to write.
    pub fn has_output(&self) -> bool {
        self.lanes.iter().any(|l| !l.out.is_empty())
    }

    /// `n` bytes of [`Pipeline::output`] of `lane` were written.
    pub fn written(&mut self, lane: usize, n: usize) {
        let out = &mut self.lanes[lane].out;
        out.drain(..n);
        if out.is_empty() && out.capacity() > 64 * 1024 {
            *out = Vec::new();
        }
    }

    /// Whether the oldest request of any lane has waited longer than
    /// `timeout` ms.
    pub fn timed_out(&self, now: u64, timeout: u64) -> bool {
        let late = |w: &Waiting| now.saturating_sub(w.sent_at) > timeout;
        (self.lanes.iter()).any(|l| l.waiting.front().is_some_and(late))
            || self.later.iter().any(|(_, _, w)| late(w))
    }

    /// Whether requests wait to be sent again (call
    /// [`Pipeline::resend_due`] soon).
    pub fn has_later(&self) -> bool {
        !self.later.is_empty()
    }

    /// Sends again the requests whose time has come; `true` if any.
    pub fn resend_due(&mut self, now: u64) -> bool {
        let mut any = false;
        let mut i = 0;
        while i < self.later.len() {
            if self.later[i].0 > now {
                i += 1;
                continue;
            }
            let (_, lane, w) = self.later.swap_remove(i);
            self.send_again(lane, w);
            any = true;
        }
        any
    }

    /// Queues `w` on `lane` again (behind `ASKING` if it was asked there).
    fn send_again(&mut self, lane: usize, w: Waiting) {
        let Some((_, cmd)) = &w.resend else { return };
        let cmd = cmd.clone();
        let lane = &mut self.lanes[lane];
        if w.asking {
            encode_command(&mut lane.out, &["ASKING"]);
            lane.waiting.push_back(Waiting {
                id: SKIP,
                expect: Expect::Done,
                sent_at: w.sent_at,
                resend: None,
                asking: false,
            });
        }
        lane.out.extend_from_slice(&cmd);
        lane.waiting.push_back(w);
    }

    /// Decodes the answer (not a push: see [`super::schema::decode_push`])
    /// to the oldest request waiting on `lane`.
    pub fn answer(&mut self, lane: usize, value: Value, now: u64) -> Result<Answer, Unexpected> {
        let w = (self.lanes.get_mut(lane))
            .and_then(|l| l.waiting.pop_front())
            .ok_or(Unexpected)?;
        if w.id == SKIP {
            return Ok(Answer::Skip);
        }
        if let (Value::Error(e), Some(_)) = (&value, &self.map) {
            if let Some(redirect) = Redirect::parse(e) {
                return Ok(self.redirect(w, redirect));
            }
            if e.starts_with("TRYAGAIN") && w.resend.is_some() {
                self.later.push((now + RETRY_MS, lane, w));
                return Ok(Answer::Retried);
            }
        }
        Ok(Answer::Reply(w.id, self.schema.decode(w.expect, value)))
    }

    /// Follows `MOVED` / `ASK` for request `w` (cluster only).
    fn redirect(&mut self, w: Waiting, r: Redirect) -> Answer {
        let Some(map) = &mut self.map else {
            return Answer::Rediscover("a redirect without a cluster".into());
        };
        let Some(to) = map.lane_of(&r.to) else {
            return Answer::Rediscover(format!(
                "slot {} moved to {}, not a known primary",
                r.slot, r.to
            ));
        };
        // A topic's sync subscribed where the topic was: it must move with
        // it, and an answer whose slot is not the request's is out of step
        // (an unsubscribe's error).
        let resend = match w.resend {
            Some((slot, cmd)) if slot == r.slot && w.expect != Expect::Synced => cmd,
            _ => return Answer::Rediscover(format!("slot {} moved to {}", r.slot, r.to)),
        };
        let lane = &mut self.lanes[to];
        if r.ask {
            encode_command(&mut lane.out, &["ASKING"]);
            lane.waiting.push_back(Waiting {
                id: SKIP,
                expect: Expect::Done,
                sent_at: w.sent_at,
                resend: None,
                asking: false,
            });
        } else {
            map.moved(r.slot, to);
        }
        lane.out.extend_from_slice(&resend);
        lane.waiting.push_back(Waiting {
            resend: Some((r.slot, resend)),
            asking: r.ask,
            ..w
        });
        Answer::Redirected { ask: r.ask }
    }
}

/// How long a `TRYAGAIN` waits before it is sent again (ms): a migration
/// moves a slot's keys in a few milliseconds.
pub const RETRY_MS: u64 = 10;

/// The id of a waiting entry that is not the hub's (an `ASKING`).
const SKIP: u64 = u64::MAX;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Endpoint;
    use crate::proto::cookie::SessionId;

    fn pipeline() -> Pipeline {
        Pipeline::new(Arc::new(Schema::new("n1", 8, 1000)))
    }

    #[test]
    fn down_refuses_and_going_down_fails_every_waiting_request() {
        let mut p = pipeline();
        assert!(!p.submit(1, &EngineOp::Who("t".into()), 0));
        p.connected();
        assert!(p.submit(1, &EngineOp::Who("t".into()), 0));
        assert!(p.submit(2, &EngineOp::End(SessionId::random()), 0));
        assert!(p.has_output());
        assert_eq!(p.disconnected(), vec![1, 2]);
        assert!(p.output(0).is_empty());
    }

    #[test]
    fn answers_match_the_oldest_request_and_time_out() {
        let mut p = pipeline();
        p.connected();
        p.submit(7, &EngineOp::Who("t".into()), 100);
        assert!(!p.timed_out(600, 500));
        assert!(p.timed_out(601, 500));
        match p.answer(0, Value::Array(vec![]), 0) {
            Ok(Answer::Reply(7, EngineReply::Members { members, .. })) => {
                assert!(members.is_empty())
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.answer(0, Value::Int(1), 0).err(), Some(Unexpected));
        let n = p.output(0).len();
        p.written(0, n);
        assert!(p.output(0).is_empty());
    }

    /// Three primaries: slots 0-5460, 5461-10922, 10923-16383.
    fn cluster() -> Pipeline {
        use crate::proto::resp::parse;
        let mut text = b"*3\r\n".to_vec();
        for (a, b, port) in [(0, 5460, 7000), (5461, 10922, 7001), (10923, 16383, 7002)] {
            text.extend(
                format!("*3\r\n:{a}\r\n:{b}\r\n*2\r\n$9\r\n127.0.0.1\r\n:{port}\r\n").bytes(),
            );
        }
        let answer = parse(&text).unwrap().unwrap().0;
        let map = SlotMap::from_slots(&answer).unwrap();
        let schema = Schema::new("n1", 8, 1000).for_cluster();
        let mut p = Pipeline::new(Arc::new(schema));
        p.connected_cluster(Some(map), 0);
        p
    }

    fn lane_with_output(p: &Pipeline) -> Vec<usize> {
        (0..p.lanes())
            .filter(|&l| !p.output(l).is_empty())
            .collect()
    }

    fn drain(p: &mut Pipeline) {
        for l in 0..p.lanes() {
            let n = p.output(l).len();
            p.written(l, n);
        }
    }

    #[test]
    fn cluster_requests_go_to_the_slots_primary() {
        let mut p = cluster();
        assert_eq!(p.lanes(), 3);
        // `{foo}` is slot 12182 (lane 2), `{bar}` slot 5061 (lane 0).
        p.submit(1, &EngineOp::Who("foo".into()), 0);
        assert_eq!(lane_with_output(&p), [2]);
        drain(&mut p);
        p.submit(2, &EngineOp::Who("bar".into()), 0);
        assert_eq!(lane_with_output(&p), [0]);
        drain(&mut p);
        // No key: lane 0.
        p.submit(3, &EngineOp::Listen, 0);
        assert_eq!(lane_with_output(&p), [0]);
        assert!(String::from_utf8_lossy(p.output(0)).contains("SUBSCRIBE"));
        drain(&mut p);
        // A session's keys carry a hash tag.
        let id = SessionId::random();
        p.submit(4, &EngineOp::End(id), 0);
        let text = String::from_utf8_lossy(p.output(lane_with_output(&p)[0])).into_owned();
        let tag = String::from_utf8(id.to_text().to_vec()).unwrap();
        assert!(text.contains(&format!("wsgate:s:{{{tag}}}:ds")), "{text}");
    }

    #[test]
    fn moved_updates_the_map_and_sends_again() {
        let mut p = cluster();
        p.submit(1, &EngineOp::Who("foo".into()), 0);
        let sent = p.output(2).to_vec();
        drain(&mut p);
        let moved = Value::Error("MOVED 12182 127.0.0.1:7000".into());
        assert!(matches!(
            p.answer(2, moved, 0),
            Ok(Answer::Redirected { ask: false })
        ));
        assert_eq!(p.output(0), &sent[..]);
        drain(&mut p);
        // The map learned it.
        p.submit(2, &EngineOp::Who("foo".into()), 0);
        assert_eq!(lane_with_output(&p), [0]);
        assert!(matches!(
            p.answer(0, Value::Array(vec![]), 0),
            Ok(Answer::Reply(1, _))
        ));
        assert!(matches!(
            p.answer(0, Value::Array(vec![]), 0),
            Ok(Answer::Reply(2, _))
        ));
    }

    #[test]
    fn ask_sends_once_behind_asking() {
        let mut p = cluster();
        p.submit(1, &EngineOp::Who("foo".into()), 0);
        let sent = p.output(2).to_vec();
        drain(&mut p);
        let ask = Value::Error("ASK 12182 127.0.0.1:7001".into());
        assert!(matches!(
            p.answer(2, ask, 0),
            Ok(Answer::Redirected { ask: true })
        ));
        let mut want = b"*1\r\n$6\r\nASKING\r\n".to_vec();
        want.extend_from_slice(&sent);
        assert_eq!(p.output(1), &want[..]);
        assert!(matches!(
            p.answer(1, Value::Simple(b"OK".to_vec()), 0),
            Ok(Answer::Skip)
        ));
        assert!(matches!(
            p.answer(1, Value::Array(vec![]), 0),
            Ok(Answer::Reply(1, _))
        ));
        drain(&mut p);
        // The map did not change.
        p.submit(2, &EngineOp::Who("foo".into()), 0);
        assert_eq!(lane_with_output(&p), [2]);
    }

    #[test]
    fn tryagain_sends_again_to_the_same_server() {
        let mut p = cluster();
        p.submit(1, &EngineOp::Who("foo".into()), 5);
        let sent = p.output(2).to_vec();
        drain(&mut p);
        let again = Value::Error("TRYAGAIN Multiple keys request during rehashing of slot".into());
        assert!(matches!(p.answer(2, again, 0), Ok(Answer::Retried)));
        assert!(p.output(2).is_empty() && p.has_later());
        assert!(!p.resend_due(RETRY_MS - 1));
        assert!(p.resend_due(RETRY_MS));
        assert_eq!(p.output(2), &sent[..]);
        // Still timed from its first sending.
        assert!(p.timed_out(506, 500));
        assert!(matches!(
            p.answer(2, Value::Array(vec![]), 0),
            Ok(Answer::Reply(1, _))
        ));
    }

    #[test]
    fn tryagain_after_ask_asks_again() {
        let mut p = cluster();
        p.submit(1, &EngineOp::Who("foo".into()), 0);
        let sent = p.output(2).to_vec();
        drain(&mut p);
        let ask = Value::Error("ASK 12182 127.0.0.1:7001".into());
        assert!(matches!(
            p.answer(2, ask, 0),
            Ok(Answer::Redirected { ask: true })
        ));
        drain(&mut p);
        assert!(matches!(
            p.answer(1, Value::Simple(b"OK".to_vec()), 0),
            Ok(Answer::Skip)
        ));
        let again = Value::Error("TRYAGAIN".into());
        assert!(matches!(p.answer(1, again, 0), Ok(Answer::Retried)));
        assert!(p.resend_due(RETRY_MS));
        let mut want = b"*1\r\n$6\r\nASKING\r\n".to_vec();
        want.extend_from_slice(&sent);
        assert_eq!(p.output(1), &want[..]);
        assert_eq!(p.disconnected(), vec![1]);
    }

    #[test]
    fn what_a_redirect_cannot_fix_rediscovers() {
        let mut p = cluster();
        p.submit(1, &EngineOp::Who("foo".into()), 0);
        let elsewhere = Value::Error("MOVED 12182 127.0.0.1:7999".into());
        assert!(matches!(
            p.answer(2, elsewhere, 0),
            Ok(Answer::Rediscover(_))
        ));
        p.submit(
            2,
            &EngineOp::Sync {
                topic: "foo".into(),
                floor: 0,
            },
            0,
        );
        let moved = Value::Error("MOVED 12182 127.0.0.1:7000".into());
        assert!(matches!(p.answer(2, moved, 0), Ok(Answer::Rediscover(_))));
        p.submit(3, &EngineOp::Who("foo".into()), 0);
        let other_slot = Value::Error("MOVED 1 127.0.0.1:7000".into());
        assert!(matches!(
            p.answer(2, other_slot, 0),
            Ok(Answer::Rediscover(_))
        ));
        let _ = Endpoint::parse("127.0.0.1:7000").unwrap();
        assert_eq!(p.disconnected(), Vec::<u64>::new());
    }

    #[test]
    fn a_subscription_the_server_drops_is_told_apart() {
        let mut p = cluster();
        let push = |ch: &str| {
            vec![
                Value::Bulk(b"sunsubscribe".to_vec()),
                Value::Bulk(ch.as_bytes().to_vec()),
                Value::Int(0),
            ]
        };
        p.submit(1, &EngineOp::Unwatch("foo".into()), 0);
        assert_eq!(p.dropped_subscription(&push("wsgate:c:{foo}")), None);
        assert_eq!(
            p.dropped_subscription(&push("wsgate:c:{foo}")).as_deref(),
            Some("wsgate:c:{foo}")
        );
        let mut plain = pipeline();
        plain.connected();
        assert_eq!(plain.dropped_subscription(&push("wsgate:c:{foo}")), None);
    }
}
