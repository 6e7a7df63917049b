//! Redis Cluster (`--redis-cluster`), sans-IO: which primary serves which
//! slot (read from `CLUSTER SHARDS`, or `CLUSTER SLOTS` before Redis 7),
//! and the redirects a node answers with (`MOVED`, `ASK`).
//!
//! A core holds one connection per primary, its *lanes* in the order of
//! [`SlotMap::primaries`]; a request goes to the lane that serves the slot
//! of its key (`engine/slot.rs`).

use super::slot::SLOTS;
use crate::config::Endpoint;
use crate::proto::resp::Value;

/// Slot → primary, and every node seen (to find the cluster again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// For each slot, the index of its primary in `primaries`.
    slots: Vec<u16>,
    primaries: Vec<Endpoint>,
    replicas: Vec<Endpoint>,
}

/// `MOVED <slot> <host:port>` or `ASK <slot> <host:port>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// `ASK` (this request only, after `ASKING`) rather than `MOVED`.
    pub ask: bool,
    /// The slot.
    pub slot: u16,
    /// Where to go.
    pub to: Endpoint,
}

impl Redirect {
    /// Parses the text of an error answer; `None` for any other error.
    pub fn parse(error: &str) -> Option<Redirect> {
        let mut w = error.split(' ');
        let ask = match w.next()? {
            "MOVED" => false,
            "ASK" => true,
            _ => return None,
        };
        let slot: u16 = w.next()?.parse().ok().filter(|&s| s < SLOTS)?;
        let to = Endpoint::parse(w.next()?).ok()?;
        Some(Redirect { ask, slot, to })
    }
}

/// The (key, value) pairs of a RESP3 map or a RESP2 flat array.
fn pairs(v: &Value) -> Option<Vec<(&[u8], &Value)>> {
    match v {
        Value::Map(m) => m.iter().map(|(k, v)| Some((k.as_bytes()?, v))).collect(),
        Value::Array(a) if a.len() % 2 == 0 => a
            .chunks(2)
            .map(|p| Some((p[0].as_bytes()?, &p[1])))
            .collect(),
        _ => None,
    }
}

fn text(v: &Value) -> Option<&str> {
    std::str::from_utf8(v.as_bytes()?).ok()
}

fn number(v: &Value) -> Option<i64> {
    v.as_int().or_else(|| text(v)?.parse().ok())
}

impl SlotMap {
    /// Reads `CLUSTER SHARDS`: each shard's slot ranges and its online
    /// primary (its `tls-port` when `tls`); every slot must be served.
    pub fn from_shards(answer: &Value, tls: bool) -> Result<SlotMap, String> {
        let Value::Array(shards) = answer else {
            return Err("CLUSTER SHARDS: not an array".into());
        };
        let mut map = SlotMap::empty();
        for shard in shards {
            let fields = pairs(shard).ok_or("CLUSTER SHARDS: a shard is not a map")?;
            let get = |k: &[u8]| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
            let Some(Value::Array(ranges)) = get(b"slots") else {
                return Err("CLUSTER SHARDS: a shard without slots".into());
            };
            let Some(Value::Array(nodes)) = get(b"nodes") else {
                return Err("CLUSTER SHARDS: a shard without nodes".into());
            };
            let mut primary = None;
            for node in nodes {
                let f = pairs(node).ok_or("CLUSTER SHARDS: a node is not a map")?;
                let get = |k: &[u8]| f.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
                let host = (get(b"endpoint").and_then(text))
                    .filter(|h| !h.is_empty() && *h != "?")
                    .or_else(|| get(b"ip").and_then(text));
                let port = if tls {
                    get(b"tls-port").and_then(number)
                } else {
                    get(b"port").and_then(number)
                };
                let (Some(host), Some(port)) = (host, port.and_then(|p| u16::try_from(p).ok()))
                else {
                    continue;
                };
                let e = Endpoint {
                    host: host.to_string(),
                    port,
                };
                let online = get(b"health").and_then(text) == Some("online");
                if get(b"role").and_then(text) == Some("master") && online {
                    primary = Some(e);
                } else {
                    map.replicas.push(e);
                }
            }
            if ranges.is_empty() {
                continue;
            }
            let primary =
                primary.ok_or("CLUSTER SHARDS: a shard with slots has no online primary")?;
            let bounds: Vec<i64> = ranges.iter().filter_map(number).collect();
            map.assign(&primary, bounds.chunks(2).map(|r| (r[0], r[r.len() - 1])))?;
        }
        map.check_covered()?;
        Ok(map)
    }

    /// Reads `CLUSTER SLOTS` (Redis < 7): `[start, end, [ip, port, id],
    /// replicas…]` per range.
    pub fn from_slots(answer: &Value) -> Result<SlotMap, String> {
        let Value::Array(ranges) = answer else {
            return Err("CLUSTER SLOTS: not an array".into());
        };
        let mut map = SlotMap::empty();
        for range in ranges {
            let Value::Array(r) = range else {
                return Err("CLUSTER SLOTS: a range is not an array".into());
            };
            let (Some(start), Some(end)) = (r.first().and_then(number), r.get(1).and_then(number))
            else {
                return Err("CLUSTER SLOTS: a range without bounds".into());
            };
            let mut nodes = r[2..].iter().filter_map(|n| {
                let Value::Array(n) = n else { return None };
                let port = u16::try_from(number(n.get(1)?)?).ok()?;
                let host = text(n.first()?)?;
                Some(Endpoint {
                    host: host.to_string(),
                    port,
                })
            });
            let primary = nodes
                .next()
                .ok_or("CLUSTER SLOTS: a range without a primary")?;
            map.replicas.extend(nodes);
            map.assign(&primary, [(start, end)].into_iter())?;
        }
        map.check_covered()?;
        Ok(map)
    }

    fn empty() -> SlotMap {
        SlotMap {
            slots: vec![u16::MAX; usize::from(SLOTS)],
            primaries: Vec::new(),
            replicas: Vec::new(),
        }
    }

    fn assign(
        &mut self,
        primary: &Endpoint,
        ranges: impl Iterator<Item = (i64, i64)>,
    ) -> Result<(), String> {
        let lane = match self.lane_of(primary) {
            Some(l) => l,
            None => {
                self.primaries.push(primary.clone());
                self.primaries.len() - 1
            }
        };
        for (start, end) in ranges {
            if !(0 <= start && start <= end && end < i64::from(SLOTS)) {
                return Err(format!("slot range {start}-{end} out of bounds"));
            }
            for s in start..=end {
                self.slots[s as usize] = lane as u16;
            }
        }
        Ok(())
    }

    fn check_covered(&self) -> Result<(), String> {
        match self.slots.iter().position(|&l| l == u16::MAX) {
            Some(s) => Err(format!("slot {s} is served by no online primary")),
            None => Ok(()),
        }
    }

    /// The primaries, in lane order.
    pub fn primaries(&self) -> &[Endpoint] {
        &self.primaries
    }

    /// Every node seen, primaries first (where to ask for the map again).
    pub fn nodes(&self) -> Vec<Endpoint> {
        let mut all = self.primaries.clone();
        all.extend(self.replicas.iter().cloned());
        all
    }

    /// The lane of a slot.
    pub fn lane(&self, slot: u16) -> usize {
        usize::from(self.slots[usize::from(slot % SLOTS)])
    }

    /// The lane of a primary, if it is one.
    pub fn lane_of(&self, e: &Endpoint) -> Option<usize> {
        self.primaries.iter().position(|p| p == e)
    }

    /// `MOVED`: the slot is served by `lane` from now on.
    pub fn moved(&mut self, slot: u16, lane: usize) {
        self.slots[usize::from(slot % SLOTS)] = lane as u16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::Bulk(s.as_bytes().to_vec())
    }

    fn node(ip: &str, port: i64, role: &str, health: &str) -> Value {
        Value::Map(vec![
            (bulk("id"), bulk("abc")),
            (bulk("port"), Value::Int(port)),
            (bulk("ip"), bulk(ip)),
            (bulk("endpoint"), bulk(ip)),
            (bulk("role"), bulk(role)),
            (bulk("replication-offset"), Value::Int(1)),
            (bulk("health"), bulk(health)),
        ])
    }

    fn shard(ranges: &[i64], nodes: Vec<Value>) -> Value {
        Value::Map(vec![
            (
                bulk("slots"),
                Value::Array(ranges.iter().map(|&n| Value::Int(n)).collect()),
            ),
            (bulk("nodes"), Value::Array(nodes)),
        ])
    }

    #[test]
    fn redirects_parse() {
        let m = Redirect::parse("MOVED 3999 127.0.0.1:6381").unwrap();
        assert!(!m.ask);
        assert_eq!(
            (m.slot, m.to.host.as_str(), m.to.port),
            (3999, "127.0.0.1", 6381)
        );
        let a = Redirect::parse("ASK 12182 10.0.0.2:7000").unwrap();
        assert!(a.ask && a.slot == 12182);
        for other in [
            "ERR unknown",
            "MOVED x 1.2.3.4:1",
            "MOVED 16384 h:1",
            "ASK 1",
            "MOVED 1 nohost",
        ] {
            assert_eq!(Redirect::parse(other), None, "{other}");
        }
    }

    #[test]
    fn shards_give_every_slot_its_primary() {
        let answer = Value::Array(vec![
            shard(
                &[0, 5460],
                vec![
                    node("127.0.0.1", 7000, "master", "online"),
                    node("127.0.0.1", 7003, "replica", "online"),
                ],
            ),
            shard(
                &[5461, 10922],
                vec![
                    node("127.0.0.1", 7004, "replica", "online"),
                    node("127.0.0.1", 7001, "master", "online"),
                ],
            ),
            shard(
                &[10923, 12000, 12001, 16383],
                vec![node("127.0.0.1", 7002, "master", "online")],
            ),
        ]);
        let mut map = SlotMap::from_shards(&answer, false).unwrap();
        let ports: Vec<u16> = map.primaries().iter().map(|p| p.port).collect();
        assert_eq!(ports, [7000, 7001, 7002]);
        assert_eq!(map.lane(0), 0);
        assert_eq!(map.lane(5461), 1);
        assert_eq!(map.lane(12182), 2);
        assert_eq!(map.nodes().len(), 5);
        map.moved(12182, 0);
        assert_eq!(map.lane(12182), 0);
        let e = Endpoint::parse("127.0.0.1:7001").unwrap();
        assert_eq!(map.lane_of(&e), Some(1));
    }

    #[test]
    fn shards_refuse_a_partial_or_failed_cluster() {
        let partial = Value::Array(vec![shard(
            &[0, 100],
            vec![node("h", 1, "master", "online")],
        )]);
        assert!(SlotMap::from_shards(&partial, false)
            .unwrap_err()
            .contains("slot 101"));
        let failed = Value::Array(vec![shard(
            &[0, 16383],
            vec![
                node("h", 1, "master", "failed"),
                node("h", 2, "replica", "online"),
            ],
        )]);
        assert!(SlotMap::from_shards(&failed, false).is_err());
    }

    #[test]
    fn tls_port_when_tls() {
        let n = Value::Map(vec![
            (bulk("port"), Value::Int(0)),
            (bulk("tls-port"), Value::Int(7443)),
            (bulk("ip"), bulk("10.0.0.1")),
            (bulk("endpoint"), bulk("node-1.example")),
            (bulk("role"), bulk("master")),
            (bulk("health"), bulk("online")),
        ]);
        let answer = Value::Array(vec![shard(&[0, 16383], vec![n])]);
        let map = SlotMap::from_shards(&answer, true).unwrap();
        assert_eq!(map.primaries()[0].to_string(), "node-1.example:7443");
    }

    #[test]
    fn slots_answer_of_older_servers() {
        let range = |a: i64, b: i64, port: i64| {
            Value::Array(vec![
                Value::Int(a),
                Value::Int(b),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(port), bulk("id")]),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(port + 3), bulk("id2")]),
            ])
        };
        let answer = Value::Array(vec![range(0, 8000, 7000), range(8001, 16383, 7001)]);
        let map = SlotMap::from_slots(&answer).unwrap();
        assert_eq!(map.lane(8000), 0);
        assert_eq!(map.lane(8001), 1);
        assert_eq!(map.nodes().len(), 4);
    }
}
