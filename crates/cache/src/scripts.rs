//! The Lua scripts: each runs atomically on one key (or one hash-tagged slot)
//! and implements the version rules of [`crate::entry`] inside Redis.

use std::sync::LazyLock;

use redis::Script;

/// Fill after a miss: `KEYS[1]` product key; `ARGV[1]` incoming version,
/// `ARGV[2]` encoded entry (a value, or the absent marker at version 0),
/// `ARGV[3]` TTL in ms. Returns 1 if written, 0 if refused.
pub(crate) const FILL: &str = r"
local cur = redis.call('GET', KEYS[1])
local v = tonumber(ARGV[1])
if cur then
  local kind, ver = string.match(cur, '^(%u)(%d+):')
  ver = tonumber(ver)
  if kind == 'V' and ver >= v then return 0 end
  if kind == 'T' and ver > v then return 0 end
  if kind == 'D' and ver >= v then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// Fence from an event: `KEYS[1]` product key; `ARGV[1]` committed version,
/// `ARGV[2]` encoded tombstone or deleted marker, `ARGV[3]` TTL in ms.
/// Keeps any entry already at or above the version (a value that fresh is
/// kept, not evicted). Returns 1 if written, 0 if kept.
pub(crate) const FENCE: &str = r"
local cur = redis.call('GET', KEYS[1])
local v = tonumber(ARGV[1])
if cur then
  local kind, ver = string.match(cur, '^(%u)(%d+):')
  ver = tonumber(ver)
  if kind and kind ~= 'N' and ver >= v then return 0 end
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// Fill a list page under its family's generation: `KEYS[1]` generation key,
/// `KEYS[2]` page key; `ARGV[1]` the generation the reader saw before it
/// queried Postgres ('' if there was none), `ARGV[2]` the page body, `ARGV[3]`
/// TTL in ms, `ARGV[4]` a fresh generation to start the family with if it
/// has none, `ARGV[5]` the WAL position the page's data was read at (16 hex
/// digits; all f's for the primary), `ARGV[6]` the generation key's TTL in
/// ms. Refuses (0) if the generation moved since the reader looked (the page
/// may predate the change that moved it), or if the data is older than the
/// change that made the generation (a lagging replica).
pub(crate) const LIST_FILL: &str = r"
local g = redis.call('GET', KEYS[1])
if not g then
  if ARGV[1] ~= '' then return 0 end
  g = ARGV[4]
  redis.call('SET', KEYS[1], g, 'PX', ARGV[6])
elseif g ~= ARGV[1] then
  return 0
end
local made_at = string.match(g, ':(%x+)$') or ''
if ARGV[5] < made_at then return 0 end
redis.call('SET', KEYS[2], 'G' .. g .. ':' .. ARGV[2], 'PX', ARGV[3])
return 1
";

pub(crate) static FILL_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(FILL));
pub(crate) static FENCE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(FENCE));
pub(crate) static LIST_FILL_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(LIST_FILL));
