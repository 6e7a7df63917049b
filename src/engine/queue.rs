//! The pipeline of requests to the shared engine on one core's connection:
//! the hub's requests are encoded and written in batches; answers come back
//! in order and are matched to the oldest request waiting. Sans-IO: bytes
//! out, values in, time as input (ms).

use std::collections::VecDeque;
use std::sync::Arc;

use super::schema::{Expect, Schema};
use crate::hub::{EngineOp, EngineReply};
use crate::proto::resp::Value;

struct Waiting {
    /// The hub's request id.
    id: u64,
    expect: Expect,
    sent_at: u64,
}

/// An answer arrived that no request waits for: the stream is out of step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unexpected;

/// One core's requests to the engine.
pub struct Pipeline {
    schema: Arc<Schema>,
    up: bool,
    /// Encoded commands not yet written.
    out: Vec<u8>,
    /// Requests whose answer has not arrived, oldest first.
    waiting: VecDeque<Waiting>,
}

impl Pipeline {
    /// An empty pipeline, down until [`Pipeline::connected`].
    pub fn new(schema: Arc<Schema>) -> Pipeline {
        Pipeline {
            schema,
            up: false,
            out: Vec::new(),
            waiting: VecDeque::new(),
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

    /// The connection is ready for requests.
    pub fn connected(&mut self) {
        self.up = true;
    }

    /// The connection is gone: returns the ids of every request that waited
    /// (each must be answered `Failed`); what was not written is dropped.
    pub fn disconnected(&mut self) -> Vec<u64> {
        self.up = false;
        self.out = Vec::new();
        self.waiting.drain(..).map(|w| w.id).collect()
    }

    /// Queues request `id` at time `now`. `false` when the connection is
    /// down: the caller answers the hub with `Failed` at once.
    pub fn submit(&mut self, id: u64, op: &EngineOp, now: u64) -> bool {
        if !self.up {
            return false;
        }
        let expect = self.schema.encode(op, &mut self.out);
        if expect != Expect::Nothing {
            self.waiting.push_back(Waiting {
                id,
                expect,
                sent_at: now,
            });
        }
        true
    }

    /// Bytes waiting to be written.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// `n` bytes of [`Pipeline::output`] were written.
    pub fn written(&mut self, n: usize) {
        self.out.drain(..n);
    }

    /// Whether the oldest request has waited longer than `timeout` ms.
    pub fn timed_out(&self, now: u64, timeout: u64) -> bool {
        (self.waiting.front()).is_some_and(|w| now.saturating_sub(w.sent_at) > timeout)
    }

    /// Decodes the answer (not a push: see [`super::schema::decode_push`])
    /// to the oldest waiting request: its id and the reply.
    pub fn answer(&mut self, value: Value) -> Result<(u64, EngineReply), Unexpected> {
        let w = self.waiting.pop_front().ok_or(Unexpected)?;
        Ok((w.id, self.schema.decode(w.expect, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert!(!p.output().is_empty());
        assert_eq!(p.disconnected(), vec![1, 2]);
        assert!(p.output().is_empty());
    }

    #[test]
    fn answers_match_the_oldest_request_and_time_out() {
        let mut p = pipeline();
        p.connected();
        p.submit(7, &EngineOp::Who("t".into()), 100);
        assert!(!p.timed_out(600, 500));
        assert!(p.timed_out(601, 500));
        match p.answer(Value::Array(vec![])) {
            Ok((7, EngineReply::Members { members, .. })) => assert!(members.is_empty()),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.answer(Value::Int(1)).err(), Some(Unexpected));
        let n = p.output().len();
        p.written(n);
        assert!(p.output().is_empty());
    }
}
