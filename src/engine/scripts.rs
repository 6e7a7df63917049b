//! The Lua scripts that keep each change to the shared engine atomic, and
//! their SHA-1s for `EVALSHA`.

/// Numbers a message (never at or below the caller's floor), keeps it in
/// the capped history and publishes it; returns the seq. A topic without
/// members expires `--topic-ttl` after its last publish (ARGV[5], ms).
const PUBLISH: &str = r#"
local s = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[2])
if s <= floor then
  s = floor + 1
  redis.call('SET', KEYS[1], s)
end
local e = string.format('%d', s) .. ' ' .. ARGV[4]
redis.call('RPUSH', KEYS[2], e)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
if redis.call('SCARD', KEYS[3]) == 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
redis.call('PUBLISH', ARGV[1], 'm' .. e)
return s
"#;

/// The topic's seq (raised to the caller's floor) and history; a raised
/// seq of a topic without members expires like a publish (ARGV[2], ms).
const LOAD: &str = r#"
local s = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if s < floor then
  s = floor
  redis.call('SET', KEYS[1], s)
  if redis.call('SCARD', KEYS[3]) == 0 then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  end
end
return {string.format('%d', s), redis.call('LRANGE', KEYS[2], 0, -1)}
"#;

/// Replaces a session's state (owner, peer id, user, last direct message
/// delivered, last seq per topic) unless another process owns it; 1 if
/// saved. Its direct messages (KEYS[2], KEYS[3]) live as long as it does.
const SAVE: &str = r#"
local o = redis.call('HGET', KEYS[1], 'owner')
if o and o ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'peer', ARGV[3], 'user', ARGV[4], 'd', ARGV[5])
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[1], 't:' .. ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return 1
"#;

/// Takes a session over: its previous owner, its fields, its direct
/// messages' last number and kept history, or nil; 0 (and nothing
/// changed) when it belongs to another user than ARGV[3] (`''`: auth off).
const CLAIM: &str = r#"
local o = redis.call('HGET', KEYS[1], 'owner')
if not o then return false end
local u = redis.call('HGET', KEYS[1], 'user') or ''
if u ~= ARGV[3] then return 0 end
local f = redis.call('HGETALL', KEYS[1])
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
local d = redis.call('GET', KEYS[2]) or '0'
return {o, f, d, redis.call('LRANGE', KEYS[3], 0, -1)}
"#;

/// Deletes a session (and its direct messages) unless another process
/// owns it; 1 if it was ours.
const END: &str = r#"
local o = redis.call('HGET', KEYS[1], 'owner')
if o and o ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return 1
"#;

/// Numbers a direct message to a session (never at or below the caller's
/// floor, ARGV[1]) and keeps it in the session's capped history (ARGV[2]
/// entries, none with 0); both keys expire with the session (its PTTL, or
/// ARGV[4] ms for a session the engine does not hold). Returns the number.
const KEEP: &str = r#"
local s = redis.call('INCR', KEYS[2])
local floor = tonumber(ARGV[1])
if s <= floor then
  s = floor + 1
  redis.call('SET', KEYS[2], s)
end
local keep = tonumber(ARGV[2])
if keep > 0 then
  redis.call('RPUSH', KEYS[3], string.format('%d', s) .. ' ' .. ARGV[3])
  redis.call('LTRIM', KEYS[3], -keep, -1)
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then ttl = tonumber(ARGV[4]) end
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('PEXPIRE', KEYS[3], ttl)
return s
"#;

/// Forwards a direct message (ARGV[1]) to the node that owns the session:
/// how many listeners got it (0: its owner is gone), or -1 when the
/// engine has no such session.
const ROUTE: &str = r#"
local o = redis.call('HGET', KEYS[1], 'owner')
if not o then return -1 end
return redis.call('PUBLISH', 'wsgate:n:' .. o, ARGV[1])
"#;

/// Adds (`SADD`) or removes (`SREM`) a member; announces only a change,
/// and only while the topic has at most ARGV[5] members (after a join,
/// before a leave: `--presence-max-members`). A topic with members keeps
/// its seq and history (KEYS[2], KEYS[3]); its last member gone, they
/// expire after `--topic-ttl` (ARGV[6], ms).
const PRESENCE: &str = r#"
local before = redis.call('SCARD', KEYS[1])
if redis.call(ARGV[3], KEYS[1], ARGV[2]) == 1 then
  local n = before
  if ARGV[3] == 'SADD' then n = before + 1 end
  if n <= tonumber(ARGV[5]) then
    redis.call('PUBLISH', ARGV[1], ARGV[4] .. ARGV[2])
  end
end
if redis.call('SCARD', KEYS[1]) == 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
  redis.call('PEXPIRE', KEYS[3], ARGV[6])
else
  redis.call('PERSIST', KEYS[2])
  redis.call('PERSIST', KEYS[3])
end
return 1
"#;

/// The members of a topic, or only their count above ARGV[1]
/// (`--presence-max-members`).
const WHO: &str = r#"
local n = redis.call('SCARD', KEYS[1])
if n > tonumber(ARGV[1]) then return n end
return redis.call('SMEMBERS', KEYS[1])
"#;

/// A script and its SHA-1 (for `EVALSHA`).
#[derive(Debug, Clone)]
pub struct Script {
    /// The Lua source (for `SCRIPT LOAD`).
    pub source: String,
    /// Lowercase hex SHA-1 of the source.
    pub sha: String,
}

impl Script {
    fn new(source: &str) -> Script {
        Script {
            source: source.to_string(),
            sha: sha1_smol::Sha1::from(source).digest().to_string(),
        }
    }

    /// With Redis Cluster, a topic's messages go out with `SPUBLISH` (sharded
    /// pub/sub, Redis ≥ 7): only the shard that owns the topic's slot
    /// carries them, instead of every node of the cluster.
    fn sharded(source: &str) -> Script {
        Script::new(&source.replace(
            "redis.call('PUBLISH', ARGV[1]",
            "redis.call('SPUBLISH', ARGV[1]",
        ))
    }
}

/// Every script, loaded on each new connection.
#[derive(Debug, Clone)]
pub struct Scripts {
    pub(super) publish: Script,
    pub(super) load: Script,
    pub(super) save: Script,
    pub(super) claim: Script,
    pub(super) end: Script,
    pub(super) presence: Script,
    pub(super) who: Script,
    pub(super) keep: Script,
    pub(super) route: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts::new(false)
    }
}

impl Scripts {
    /// The scripts; `sharded`: a topic's messages go out with `SPUBLISH`.
    pub fn new(sharded: bool) -> Scripts {
        let topic = if sharded {
            Script::sharded
        } else {
            Script::new
        };
        Scripts {
            publish: topic(PUBLISH),
            load: Script::new(LOAD),
            save: Script::new(SAVE),
            claim: Script::new(CLAIM),
            end: Script::new(END),
            presence: topic(PRESENCE),
            who: Script::new(WHO),
            keep: Script::new(KEEP),
            route: Script::new(ROUTE),
        }
    }

    /// All of them, for `SCRIPT LOAD`.
    pub fn all(&self) -> [&Script; 9] {
        [
            &self.publish,
            &self.load,
            &self.save,
            &self.claim,
            &self.end,
            &self.presence,
            &self.who,
            &self.keep,
            &self.route,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sharded_scripts_spublish_topics_only() {
        let plain = Scripts::new(false);
        let sharded = Scripts::new(true);
        for (p, s) in [
            (&plain.publish, &sharded.publish),
            (&plain.presence, &sharded.presence),
        ] {
            assert!(p.source.contains("'PUBLISH', ARGV[1]"));
            assert!(s.source.contains("'SPUBLISH', ARGV[1]") && !s.source.contains("'PUBLISH'"));
            assert_ne!(p.sha, s.sha);
        }
        // A process's channel is classic pub/sub: every node hears it.
        assert_eq!(plain.route.source, sharded.route.source);
        assert!(sharded.route.source.contains("'PUBLISH'"));
    }
}
