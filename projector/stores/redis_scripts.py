"""Lua scripts of the Redis projection store; each runs atomically in Redis.

Generation-relative keys are built inside a script only after it has read
``active`` (so one call never mixes generations); callers pass the
generation-independent prefix ``P:proj:`` as an argument for that.
"""

from __future__ import annotations

# KEYS: active, next_gen. ARGV: base ("P:proj:"), origin checkpoint.
# Creates generation 1 (via next_gen) and activates it unless a generation is active.
INITIALIZE = """
local active = redis.call('GET', KEYS[1])
if active then return active end
local g = redis.call('INCR', KEYS[2])
redis.call('SET', ARGV[1] .. 'g' .. g .. ':checkpoint', ARGV[2])
redis.call('SET', KEYS[1], g)
return tostring(g)
"""

# KEYS: active. ARGV: base. Returns {generation, checkpoint} or false (nothing active).
ACTIVE_CHECKPOINT = """
local g = redis.call('GET', KEYS[1])
if not g then return false end
return {g, redis.call('GET', ARGV[1] .. 'g' .. g .. ':checkpoint') or ''}
"""

# KEYS: active, checkpoint, then the doc keys to SET, the doc keys to DEL, the index keys to
#   ZREM from and the index keys to ZADD to.
# ARGV: required active generation ('' = don't check: a rebuild's unpublished generation),
#   expected checkpoint, new checkpoint, #SET, #DEL, #ZREM, #ZADD, then the SET values,
#   the ZREM members and the ZADD members.
# Checks first and writes only if both hold: a stale or second runner changes nothing.
APPLY_BATCH = """
if ARGV[1] ~= '' then
  local active = redis.call('GET', KEYS[1])
  if active ~= ARGV[1] then return {'generation', active or ''} end
end
local cp = redis.call('GET', KEYS[2])
if cp ~= ARGV[2] then return {'checkpoint', cp or ''} end
local nset, ndel = tonumber(ARGV[4]), tonumber(ARGV[5])
local nrem, nadd = tonumber(ARGV[6]), tonumber(ARGV[7])
local k, a = 3, 8
for _ = 1, nset do redis.call('SET', KEYS[k], ARGV[a]); k = k + 1; a = a + 1 end
for _ = 1, ndel do redis.call('DEL', KEYS[k]); k = k + 1 end
for _ = 1, nrem do redis.call('ZREM', KEYS[k], ARGV[a]); k = k + 1; a = a + 1 end
for _ = 1, nadd do redis.call('ZADD', KEYS[k], 0, ARGV[a]); k = k + 1; a = a + 1 end
redis.call('SET', KEYS[2], ARGV[3])
return {'ok', ARGV[3]}
"""

# KEYS: active, the new generation's checkpoint. ARGV: new generation, base.
# Activates the new generation only if it is not behind the active one, so the live
# runner continues from a checkpoint at least as far as the one it had.
# Returns {'ok', previous generation or ''} or {'behind', active generation's checkpoint}.
SWITCH_GENERATION = """
local active = redis.call('GET', KEYS[1])
if active == ARGV[1] then return {'ok', ''} end
local new_cp = redis.call('GET', KEYS[2])
if not new_cp then return redis.error_reply('generation ' .. ARGV[1] .. ' has no checkpoint') end
if active then
  local cur = redis.call('GET', ARGV[2] .. 'g' .. active .. ':checkpoint') or ''
  if new_cp < cur then return {'behind', cur} end
end
redis.call('SET', KEYS[1], ARGV[1])
return {'ok', active or ''}
"""
