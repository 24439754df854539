-- One batch of a projection, all or nothing (compare-and-set on the checkpoint).
-- KEYS: active, checkpoint, the generation's documents (a hash), then the index keys to
--   ZREM from and the index keys to ZADD to; for a segment (projector.segments), then
--   the projection's checkpoint and every segment's checkpoint (its own among them).
-- ARGV: required active generation ('' = don't check: a rebuild's unpublished copy),
--   expected checkpoint, new checkpoint, #SET, #DEL, #ZREM, #ZADD, the changes channel
--   ('' = publish nothing), the change message, then the documents to set (id, value,
--   id, value...), the ids to delete, the ZREM members and the ZADD members; last, for a
--   segment, the number of segments.
-- Returns {'ok', new} or, changing nothing, {'generation', active or ''} or
-- {'checkpoint', found or ''} ('' = the generation has no checkpoint: it vanished).
-- The change message is published in the same atomic step as the writes, so a subscriber
-- (the read servers' near-caches) sees every change in commit order, right after it.
if ARGV[1] ~= '' then
  local active = redis.call('GET', KEYS[1])
  if active ~= ARGV[1] then return {'generation', active or ''} end
end
local cp = redis.call('GET', KEYS[2])
if cp ~= ARGV[2] then return {'checkpoint', cp or ''} end
local nset, ndel = tonumber(ARGV[4]), tonumber(ARGV[5])
local nrem, nadd = tonumber(ARGV[6]), tonumber(ARGV[7])
local nseg = tonumber(ARGV[10 + 2 * nset + ndel + nrem + nadd] or '0')
for i = #KEYS - nseg + 1, #KEYS do
  -- Every segment's checkpoint is there (a missing one: the copy is gone, or was split
  -- differently): checked before anything is written.
  if redis.call('EXISTS', KEYS[i]) == 0 then return {'checkpoint', ''} end
end
local k, a = 4, 10
for _ = 1, nset do redis.call('HSET', KEYS[3], ARGV[a], ARGV[a + 1]); a = a + 2 end
for _ = 1, ndel do redis.call('HDEL', KEYS[3], ARGV[a]); a = a + 1 end
for _ = 1, nrem do redis.call('ZREM', KEYS[k], ARGV[a]); k = k + 1; a = a + 1 end
for _ = 1, nadd do redis.call('ZADD', KEYS[k], 0, ARGV[a]); k = k + 1; a = a + 1 end
redis.call('SET', KEYS[2], ARGV[3])
local message = ARGV[9]
if nseg > 0 then
  -- A segment: the projection's checkpoint is the lowest of its segments' (each only
  -- moves forward, so neither does this), and that is what the readers are told.
  local low = nil
  for i = #KEYS - nseg + 1, #KEYS do
    local c = redis.call('GET', KEYS[i])
    if not low or c < low then low = c end
  end
  redis.call('SET', KEYS[#KEYS - nseg], low)
  if message ~= '' then
    local s, e = string.find(message, ARGV[3], 1, true)
    if s then message = string.sub(message, 1, s - 1) .. low .. string.sub(message, e + 1) end
  end
end
if ARGV[8] ~= '' then redis.call('PUBLISH', ARGV[8], message) end
return {'ok', ARGV[3]}
