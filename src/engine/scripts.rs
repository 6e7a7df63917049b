//! The Lua scripts that keep each change to the shared engine atomic, and
//! their SHA-1s for `EVALSHA`.

/// Numbers a message (never at or below the caller's floor), keeps it in
/// the capped history and publishes it; returns the seq.
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
redis.call('PUBLISH', ARGV[1], 'm' .. e)
return s
"#;

/// The topic's seq (raised to the caller's floor) and history.
const LOAD: &str = r#"
local s = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if s < floor then
  s = floor
  redis.call('SET', KEYS[1], s)
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

/// Adds (`SADD`) or removes (`SREM`) a member; announces only a change.
const PRESENCE: &str = r#"
if redis.call(ARGV[3], KEYS[1], ARGV[2]) == 1 then
  redis.call('PUBLISH', ARGV[1], ARGV[4] .. ARGV[2])
end
return 1
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
        }
    }
}

impl Scripts {
    /// All of them, for `SCRIPT LOAD`.
    pub fn all(&self) -> [&Script; 6] {
        [
            &self.publish,
            &self.load,
            &self.save,
            &self.claim,
            &self.end,
            &self.presence,
        ]
    }
}
