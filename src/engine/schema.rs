//! The shared engine's schema in Redis: key names and the translation between the hub's
//! [`EngineOp`]/[`EngineReply`] and RESP. Sans-IO; the scripts are in
//! [`super::scripts`], the pipeline in [`super::queue`].
//!
//! Keys (the topic in `{…}` so a Redis Cluster keeps a topic's keys in one
//! slot; topic names cannot contain braces):
//! - `wsgate:s:<session-id>`: hash, `owner` = the process that serves it,
//!   `peer` = its peer id, `user` = its user (empty with auth off; a claim
//!   by another user is refused), `d` = the last direct message its client
//!   got, `t:<topic>` = last seq delivered; expires when no node refreshes it.
//! - `wsgate:s:<session-id>:ds`: the last number of its direct messages;
//!   `wsgate:s:<session-id>:dh`: capped list of `<seq> <t|b><payload>`, its
//!   kept direct messages. Both expire with the session.
//! - `wsgate:t:{<topic>}:seq`: the topic's last sequence number.
//! - `wsgate:t:{<topic>}:h`: capped list of `<seq> <t|b><payload>`.
//! - `wsgate:t:{<topic>}:m`: set of members, `<peer>` or `<peer>:<user>`
//!   (never session ids: `who` reads it).
//! - channel `wsgate:c:{<topic>}`: `m<seq> <t|b><payload>`, `j<member>`, `l<member>`.
//! - channel `wsgate:n:<instance>` (one per process, its first core listens):
//!   `d<origin> <core>.<request> s<session-id> <t|b><payload>`, a direct
//!   message for a session it owns, and `a<core>.<request> <delivered> <held>`,
//!   a node's answer to a request of this process.
//! - channel `wsgate:u` (every process): `d<origin> <core>.<request> u<user>
//!   <t|b><payload>`, a direct message for every session of a user.

use std::sync::Arc;

use crate::auth::is_valid_user;
use crate::hub::{
    Claimed, ClaimedDirects, DirectCount, DirectPush, DirectTarget, EngineEvent, EngineOp,
    EngineReply, Stored,
};
use crate::proto::cookie::SessionId;
use crate::proto::peer::{Member, PeerId};
use crate::proto::resp::{encode_command, Value};

use super::scripts::Scripts;
use super::slot::key_slot;

/// The process-wide identity written as a session's owner.
#[derive(Debug, Clone)]
pub struct Schema {
    /// `<node-id>/<random>`: unique per process, so a restarted node does
    /// not mistake its predecessor's sessions for its own.
    pub instance: Arc<str>,
    /// The scripts.
    pub scripts: Scripts,
    /// Messages kept per topic (`--history-size`).
    pub history_size: usize,
    /// How long a claimed session is kept before its first save (ms).
    pub session_ttl_ms: u64,
    /// `--topic-ttl` (ms): how long a topic without members is kept.
    pub topic_ttl_ms: u64,
    /// `--presence-max-members`.
    pub presence_cap: usize,
    /// Redis Cluster (`--redis-cluster`): session keys hash-tagged, topic
    /// channels sharded (`SSUBSCRIBE`, `SPUBLISH`).
    pub cluster: bool,
}

/// What kind of answer a request expects, to decode it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// No regular reply (pub/sub (un)subscribe answers with pushes).
    Nothing,
    Claim,
    Owned,
    Published,
    Synced,
    Members,
    Routed,
    Kept,
    Done,
}

/// A session's hash: `wsgate:s:<id>`, or `wsgate:s:{<id>}` in a cluster (so
/// its direct-message keys share its slot).
fn session_key(id: SessionId, tagged: bool) -> Vec<u8> {
    let mut k = b"wsgate:s:".to_vec();
    if tagged {
        k.push(b'{');
    }
    k.extend_from_slice(&id.to_text());
    if tagged {
        k.push(b'}');
    }
    k
}

/// A session's direct messages: their last number, and the kept ones.
fn direct_keys(id: SessionId, tagged: bool) -> [Vec<u8>; 3] {
    let key = session_key(id, tagged);
    let seq = [&key[..], b":ds"].concat();
    let kept = [&key[..], b":dh"].concat();
    [key, seq, kept]
}

/// The channel every process listens on for direct messages to a user.
pub const USER_CHANNEL: &str = "wsgate:u";

/// The channel of one process (its direct messages and answers).
pub fn node_channel(instance: &str) -> String {
    format!("wsgate:n:{instance}")
}

fn topic_key(topic: &str, suffix: &str) -> String {
    format!("wsgate:t:{{{topic}}}:{suffix}")
}

/// The channel of a topic.
pub fn channel(topic: &str) -> String {
    format!("wsgate:c:{{{topic}}}")
}

/// The topic of a channel.
pub fn topic_of_channel(channel: &[u8]) -> Option<&str> {
    let inner = channel.strip_prefix(b"wsgate:c:{")?.strip_suffix(b"}")?;
    std::str::from_utf8(inner).ok()
}

fn body(binary: bool, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(payload.len() + 1);
    b.push(if binary { b'b' } else { b't' });
    b.extend_from_slice(payload);
    b
}

impl Schema {
    /// A schema for this process.
    pub fn new(node_id: &str, history_size: usize, session_ttl_ms: u64) -> Schema {
        Schema {
            instance: format!("{node_id}/{}", SessionId::random()).into(),
            scripts: Scripts::default(),
            history_size,
            session_ttl_ms,
            topic_ttl_ms: 60_000,
            presence_cap: 1000,
            cluster: false,
        }
    }

    /// For Redis Cluster (`--redis-cluster`).
    pub fn for_cluster(mut self) -> Schema {
        self.cluster = true;
        self.scripts = Scripts::new(true);
        self
    }

    /// The slot of the keys (and channel) a request touches; `None` when it
    /// touches none (classic pub/sub: any node).
    pub fn slot_of(&self, op: &EngineOp) -> Option<u16> {
        let session = |id: &SessionId| Some(key_slot(&session_key(*id, self.cluster)));
        let topic = |t: &str| Some(key_slot(topic_key(t, "seq").as_bytes()));
        match op {
            EngineOp::Claim { session: id, .. }
            | EngineOp::Save { session: id, .. }
            | EngineOp::End(id)
            | EngineOp::Keep { session: id, .. } => session(id),
            EngineOp::Route {
                target: DirectTarget::Session(id),
                ..
            } => session(id),
            EngineOp::Publish { topic: t, .. }
            | EngineOp::Sync { topic: t, .. }
            | EngineOp::Unwatch(t)
            | EngineOp::Join { topic: t, .. }
            | EngineOp::Leave { topic: t, .. }
            | EngineOp::Who(t) => topic(t),
            EngineOp::Route { .. } | EngineOp::Listen | EngineOp::Answer { .. } => None,
        }
    }

    /// With `--topic-ttl` (ms) and `--presence-max-members`.
    pub fn with_topics(mut self, topic_ttl_ms: u64, presence_cap: usize) -> Schema {
        self.topic_ttl_ms = topic_ttl_ms.max(1);
        self.presence_cap = presence_cap;
        self
    }

    /// Appends the commands of `op` to `out`; says what answer to expect.
    pub fn encode(&self, op: &EngineOp, out: &mut Vec<u8>) -> Expect {
        match op {
            EngineOp::Claim { session, user } => self.encode_claim(*session, user.as_deref(), out),
            EngineOp::Save {
                session,
                peer,
                user,
                subs,
                direct,
                ttl_ms,
            } => {
                let who = (*peer, user.as_deref());
                self.encode_save(*session, who, subs, *direct, *ttl_ms, out)
            }
            EngineOp::End(id) => {
                let [key, seq, kept] = direct_keys(*id, self.cluster);
                let end = self.scripts.end.sha.as_bytes();
                let me = self.instance.as_bytes();
                let args: [&[u8]; 7] = [b"EVALSHA", end, b"3", &key, &seq, &kept, me];
                encode_command(out, &args);
                Expect::Owned
            }
            EngineOp::Publish {
                topic,
                payload,
                binary,
                floor,
            } => self.encode_publish(topic, payload, *binary, *floor, out),
            EngineOp::Sync { topic, floor } => {
                let subscribe = if self.cluster {
                    "SSUBSCRIBE"
                } else {
                    "SUBSCRIBE"
                };
                encode_command(out, &[subscribe, &channel(topic)]);
                let seq_key = topic_key(topic, "seq");
                let history_key = topic_key(topic, "h");
                let members = topic_key(topic, "m");
                let load = &self.scripts.load.sha;
                let floor = floor.to_string();
                let ttl = self.topic_ttl_ms.to_string();
                encode_command(
                    out,
                    &[
                        "EVALSHA",
                        load,
                        "3",
                        &seq_key,
                        &history_key,
                        &members,
                        &floor,
                        &ttl,
                    ],
                );
                Expect::Synced
            }
            EngineOp::Unwatch(topic) => {
                let unsubscribe = if self.cluster {
                    "SUNSUBSCRIBE"
                } else {
                    "UNSUBSCRIBE"
                };
                encode_command(out, &[unsubscribe, &channel(topic)]);
                Expect::Nothing
            }
            EngineOp::Join { topic, member } => self.encode_presence(topic, member, true, out),
            EngineOp::Leave { topic, member } => self.encode_presence(topic, member, false, out),
            EngineOp::Who(topic) => {
                let who = &self.scripts.who.sha;
                let cap = self.presence_cap.to_string();
                encode_command(out, &["EVALSHA", who, "1", &topic_key(topic, "m"), &cap]);
                Expect::Members
            }
            EngineOp::Listen => {
                let mine = node_channel(&self.instance);
                encode_command(out, &["SUBSCRIBE", &mine, USER_CHANNEL]);
                Expect::Nothing
            }
            EngineOp::Route {
                target,
                payload,
                binary,
                core,
                request,
            } => {
                let mut msg = format!("d{} {core}.{request} ", self.instance).into_bytes();
                match target {
                    DirectTarget::Session(id) => {
                        msg.push(b's');
                        msg.extend_from_slice(&id.to_text());
                    }
                    DirectTarget::User(user) => {
                        msg.push(b'u');
                        msg.extend_from_slice(user.as_bytes());
                    }
                }
                msg.push(b' ');
                msg.extend_from_slice(&body(*binary, payload));
                match target {
                    DirectTarget::Session(id) => {
                        let route = self.scripts.route.sha.as_bytes();
                        let key = session_key(*id, self.cluster);
                        encode_command(out, &[b"EVALSHA", route, b"1", &key, &msg]);
                    }
                    DirectTarget::User(_) => {
                        let publish: [&[u8]; 3] = [b"PUBLISH", USER_CHANNEL.as_bytes(), &msg];
                        encode_command(out, &publish);
                    }
                }
                Expect::Routed
            }
            EngineOp::Keep {
                session,
                payload,
                binary,
                floor,
            } => {
                let [key, seq, kept] = direct_keys(*session, self.cluster);
                let floor = floor.to_string();
                let keep = self.history_size.to_string();
                let ttl = self.session_ttl_ms.max(1).to_string();
                let args: [&[u8]; 10] = [
                    b"EVALSHA",
                    self.scripts.keep.sha.as_bytes(),
                    b"3",
                    &key,
                    &seq,
                    &kept,
                    floor.as_bytes(),
                    keep.as_bytes(),
                    &body(*binary, payload),
                    ttl.as_bytes(),
                ];
                encode_command(out, &args);
                Expect::Kept
            }
            EngineOp::Answer {
                origin,
                core,
                request,
                count,
            } => {
                let (d, h) = (count.delivered, count.held);
                let msg = format!("a{core}.{request} {d} {h}");
                encode_command(out, &["PUBLISH", &node_channel(origin), &msg]);
                Expect::Done
            }
        }
    }

    fn encode_claim(&self, id: SessionId, user: Option<&str>, out: &mut Vec<u8>) -> Expect {
        let [key, seq, kept] = direct_keys(id, self.cluster);
        // The claimer sets the real expiry when it saves right after.
        let ttl = self.session_ttl_ms.max(1).to_string();
        let args: [&[u8]; 9] = [
            b"EVALSHA",
            self.scripts.claim.sha.as_bytes(),
            b"3",
            &key,
            &seq,
            &kept,
            self.instance.as_bytes(),
            ttl.as_bytes(),
            user.unwrap_or("").as_bytes(),
        ];
        encode_command(out, &args);
        Expect::Claim
    }

    fn encode_save(
        &self,
        session: SessionId,
        (peer, user): (PeerId, Option<&str>),
        subs: &[(Arc<str>, u64)],
        direct: u64,
        ttl_ms: u64,
        out: &mut Vec<u8>,
    ) -> Expect {
        let [key, seq, kept] = direct_keys(session, self.cluster);
        let mut args: Vec<Vec<u8>> = vec![
            b"EVALSHA".to_vec(),
            self.scripts.save.sha.clone().into_bytes(),
            b"3".to_vec(),
            key,
            seq,
            kept,
            self.instance.as_bytes().to_vec(),
            ttl_ms.max(1).to_string().into_bytes(),
            peer.to_text().to_vec(),
            user.unwrap_or("").as_bytes().to_vec(),
            direct.to_string().into_bytes(),
        ];
        for (topic, last) in subs {
            args.push(topic.as_bytes().to_vec());
            args.push(last.to_string().into_bytes());
        }
        encode_command(out, &args);
        Expect::Owned
    }

    fn encode_publish(
        &self,
        topic: &str,
        payload: &[u8],
        binary: bool,
        floor: u64,
        out: &mut Vec<u8>,
    ) -> Expect {
        let seq_key = topic_key(topic, "seq");
        let history_key = topic_key(topic, "h");
        let members = topic_key(topic, "m");
        let chan = channel(topic);
        let floor = floor.to_string();
        let keep = self.history_size.to_string();
        let ttl = self.topic_ttl_ms.to_string();
        let args: [&[u8]; 11] = [
            b"EVALSHA",
            self.scripts.publish.sha.as_bytes(),
            b"3",
            seq_key.as_bytes(),
            history_key.as_bytes(),
            members.as_bytes(),
            chan.as_bytes(),
            floor.as_bytes(),
            keep.as_bytes(),
            &body(binary, payload),
            ttl.as_bytes(),
        ];
        encode_command(out, &args);
        Expect::Published
    }

    /// `SADD` + `j` for a join, `SREM` + `l` for a leave.
    fn encode_presence(
        &self,
        topic: &str,
        member: &Member,
        joined: bool,
        out: &mut Vec<u8>,
    ) -> Expect {
        let (cmd, tag) = if joined { ("SADD", "j") } else { ("SREM", "l") };
        let text = member.to_text();
        // A peer id and a user id: ASCII by construction.
        let sid = std::str::from_utf8(&text).unwrap_or("");
        let members = topic_key(topic, "m");
        let (seq_key, history_key) = (topic_key(topic, "seq"), topic_key(topic, "h"));
        let presence = &self.scripts.presence.sha;
        let chan = channel(topic);
        let cap = self.presence_cap.to_string();
        let ttl = self.topic_ttl_ms.to_string();
        encode_command(
            out,
            &[
                "EVALSHA",
                presence,
                "3",
                &members,
                &seq_key,
                &history_key,
                &chan,
                sid,
                cmd,
                tag,
                &cap,
                &ttl,
            ],
        );
        Expect::Done
    }

    /// Decodes the answer to a request.
    pub fn decode(&self, expect: Expect, v: Value) -> EngineReply {
        if let Value::Error(_) = v {
            return EngineReply::Failed;
        }
        let decoded = match expect {
            Expect::Nothing | Expect::Done => Some(EngineReply::Done),
            Expect::Owned => v.as_int().map(|n| EngineReply::Owned(n == 1)),
            Expect::Published => v
                .as_int()
                .and_then(|n| u64::try_from(n).ok())
                .map(EngineReply::Published),
            Expect::Claim => self.decode_claim(v),
            Expect::Routed => v.as_int().map(EngineReply::Routed),
            Expect::Kept => v
                .as_int()
                .and_then(|n| u64::try_from(n).ok())
                .map(EngineReply::Kept),
            Expect::Synced => decode_synced(v),
            Expect::Members => match v {
                Value::Array(items) => {
                    let members: Vec<Member> = (items.iter())
                        .filter_map(|m| m.as_bytes().and_then(parse_member))
                        .collect();
                    let count = members.len();
                    Some(EngineReply::Members { count, members })
                }
                // Above the presence cap: the count only.
                Value::Int(n) => usize::try_from(n).ok().map(|count| EngineReply::Members {
                    count,
                    members: Vec::new(),
                }),
                _ => None,
            },
        };
        decoded.unwrap_or(EngineReply::Failed)
    }

    fn decode_claim(&self, v: Value) -> Option<EngineReply> {
        let items = match v {
            Value::Null | Value::Bool(false) => return Some(EngineReply::Claimed(None)),
            Value::Int(0) => return Some(EngineReply::Mismatch),
            Value::Array(items) => items,
            _ => return None,
        };
        let (owner, fields, directs) = match &items[..] {
            [owner, Value::Array(fields)] => (owner, fields, ClaimedDirects::default()),
            [owner, Value::Array(fields), seq, Value::Array(kept)] => {
                let seq = std::str::from_utf8(seq.as_bytes()?).ok()?.parse().ok()?;
                let kept = (kept.iter())
                    .map(|e| parse_entry(e.as_bytes()?))
                    .collect::<Option<Vec<Stored>>>()?;
                let delivered = 0;
                (
                    owner,
                    fields,
                    ClaimedDirects {
                        delivered,
                        seq,
                        kept,
                    },
                )
            }
            _ => return None,
        };
        let mut directs = directs;
        let mine = owner.as_bytes()? == self.instance.as_bytes();
        let mut subs = Vec::new();
        let mut peer = None;
        for pair in fields.chunks(2) {
            let [k, v] = pair else { return None };
            let key = k.as_bytes()?;
            if key == b"peer" {
                peer = Some(PeerId::parse(v.as_bytes()?)?);
                continue;
            }
            if key == b"d" {
                let d = std::str::from_utf8(v.as_bytes()?).ok()?;
                directs.delivered = d.parse().ok()?;
                continue;
            }
            let Some(topic) = key.strip_prefix(b"t:") else {
                continue; // `owner`
            };
            let topic = std::str::from_utf8(topic).ok()?;
            let last = u64::try_from(v.as_int()?).ok()?;
            subs.push((Arc::from(topic), last));
        }
        let c = Claimed {
            mine,
            subs,
            peer,
            directs,
        };
        Some(EngineReply::Claimed(Some(c)))
    }
}

/// A member as kept in the engine: `<peer>` or `<peer>:<user>`.
fn parse_member(text: &[u8]) -> Option<Member> {
    Member::parse(text, is_valid_user)
}

/// `<seq> <t|b><payload>` (a history entry; on the channel after an `m`).
fn parse_entry(entry: &[u8]) -> Option<Stored> {
    let sp = entry.iter().position(|&b| b == b' ')?;
    let seq = std::str::from_utf8(&entry[..sp]).ok()?.parse().ok()?;
    let binary = match entry.get(sp + 1)? {
        b'b' => true,
        b't' => false,
        _ => return None,
    };
    Some(Stored {
        seq,
        payload: entry[sp + 2..].into(),
        binary,
    })
}

fn decode_synced(v: Value) -> Option<EngineReply> {
    let Value::Array(items) = v else { return None };
    let [seq, Value::Array(entries)] = &items[..] else {
        return None;
    };
    let seq = u64::try_from(seq.as_int()?).ok()?;
    let mut history = Vec::with_capacity(entries.len());
    for e in entries {
        history.push(parse_entry(e.as_bytes()?)?);
    }
    Some(EngineReply::Synced { seq, history })
}

/// A pub/sub push: the topic and what happened on it. Subscribe
/// confirmations and anything unknown are `None`.
pub fn decode_push(items: &[Value]) -> Option<(&str, EngineEvent)> {
    let [kind, chan, data] = items else {
        return None;
    };
    // `smessage`: sharded pub/sub (Redis Cluster).
    if !matches!(kind.as_bytes()?, b"message" | b"smessage") {
        return None;
    }
    let topic = topic_of_channel(chan.as_bytes()?)?;
    let data = data.as_bytes()?;
    let event = match data.first()? {
        b'm' => EngineEvent::Message(parse_entry(&data[1..])?),
        b'j' | b'l' => EngineEvent::Presence {
            joined: data[0] == b'j',
            member: parse_member(&data[1..])?,
        },
        _ => return None,
    };
    Some((topic, event))
}

/// A push on a process's channel or the users' channel: a direct message
/// or a node's answer. Anything else is `None`.
pub fn decode_direct_push(items: &[Value]) -> Option<DirectPush> {
    let [kind, chan, data] = items else {
        return None;
    };
    let chan = chan.as_bytes()?;
    if kind.as_bytes()? != b"message"
        || !(chan.starts_with(b"wsgate:n:") || chan == USER_CHANNEL.as_bytes())
    {
        return None;
    }
    let data = data.as_bytes()?;
    let (&kind, rest) = data.split_first()?;
    let mut fields = rest.splitn(4, |&b| b == b' ');
    let mut next = || std::str::from_utf8(fields.next()?).ok();
    match kind {
        b'a' => {
            let (core, request) = next()?.split_once('.')?;
            let count = DirectCount {
                delivered: next()?.parse().ok()?,
                held: next()?.parse().ok()?,
            };
            let (core, request) = (core.parse().ok()?, request.parse().ok()?);
            Some(DirectPush::Answer {
                core,
                request,
                count,
            })
        }
        b'd' => {
            let origin: Arc<str> = next()?.into();
            let (core, request) = next()?.split_once('.')?;
            let (core, request) = (core.parse().ok()?, request.parse().ok()?);
            let target = next()?.as_bytes();
            let target = match target.split_first()? {
                (b's', id) => DirectTarget::Session(SessionId::parse(id)?),
                (b'u', user) if is_valid_user(user) => {
                    DirectTarget::User(std::str::from_utf8(user).ok()?.into())
                }
                _ => return None,
            };
            let body = fields.next()?;
            let (&form, payload) = body.split_first()?;
            let binary = match form {
                b'b' => true,
                b't' => false,
                _ => return None,
            };
            if origin.is_empty() {
                return None;
            }
            Some(DirectPush::Request {
                origin,
                core,
                request,
                target,
                payload: payload.into(),
                binary,
            })
        }
        _ => None,
    }
}

#[cfg(test)]
#[path = "schema_tests.rs"]
mod tests;
