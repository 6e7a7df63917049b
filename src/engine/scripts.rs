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

/// Replaces a session's state (owner, peer id, user, last seq per topic)
/// unless another process owns it; 1 if saved.
const SAVE: &str = r#"
local o = redis.call('HGET', KEYS[1], 'owner')
if o and o ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'peer', ARGV[3], 'user', ARGV[4])
for i = 5, #ARGV, 2 do
  redis.call('HSET', KEYS[1], 't:' .. ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"#;

/// Takes a session over: its previous owner and fields, or nil; 0 (and
/// nothing changed) when it belongs to another user than ARGV[3] (`''`:
/// auth off).
const CLAIM: &str = r#"
local o = redis.call('HGET', KEYS[1], 'owner')
if not o then return false end
local u = redis.call('HGET', KEYS[1], 'user') or ''
if u ~= ARGV[3] then return 0 end
local f = redis.call('HGETALL', KEYS[1])
redis.call('HSET', KEYS[1], 'owner', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {o, f}
"#;

/// Deletes a session unless another process owns it; 1 if it was ours.
const END: &str = r#"
local o = redis.call('HGET', KEYS[1], 'owner')
if o and o ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
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
    pub source: &'static str,
    /// Lowercase hex SHA-1 of the source.
    pub sha: String,
}

impl Script {
    fn new(source: &'static str) -> Script {
        Script {
            source,
            sha: sha1_smol::Sha1::from(source).digest().to_string(),
        }
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
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            publish: Script::new(PUBLISH),
            load: Script::new(LOAD),
            save: Script::new(SAVE),
            claim: Script::new(CLAIM),
            end: Script::new(END),
            presence: Script::new(PRESENCE),
            who: Script::new(WHO),
        }
    }
}

impl Scripts {
    /// All of them, for `SCRIPT LOAD`.
    pub fn all(&self) -> [&Script; 7] {
        [
            &self.publish,
            &self.load,
            &self.save,
            &self.claim,
            &self.end,
            &self.presence,
            &self.who,
        ]
    }
}
