-- Make a rebuilt generation active, unless it is behind the active one (so the live
-- runner continues from a checkpoint at least as far as the one it had).
-- KEYS[1]  {P}:{proj}:active      KEYS[2]  the new generation's checkpoint
-- KEYS[3]  the checkpoint of generation ARGV[2], the one the caller saw active
-- KEYS[4]  the new generation's segment count, KEYS[5..]  its segments' checkpoints
--          (projector.segments; none: the projection is not split)
-- ARGV[1]  the new generation     ARGV[2]  the generation the caller saw active ('0': none)
-- ARGV[3]  the changes channel, told of the switch and the new checkpoint (near-caches
--          drop what they hold)
-- Returns {'ok', previous generation or ''}, {'behind', the active checkpoint},
-- {3, the active generation or '0'} when it is not ARGV[2] (ask again with its keys), or {'lost', ''} when the new generation has no checkpoint (it vanished).
local active = redis.call('GET', KEYS[1])
if active == ARGV[1] then return {'ok', ''} end
if (active or '0') ~= ARGV[2] then return {3, active or '0'} end
local new_cp = redis.call('GET', KEYS[2])
if not new_cp then return {'lost', ''} end
if active then
  local cur = redis.call('GET', KEYS[3]) or ''
  if new_cp < cur then return {'behind', cur} end
end
-- A copy is built whole; split here, every segment starting where the copy stands.
if #KEYS > 4 then
  redis.call('SET', KEYS[4], #KEYS - 4)
  for i = 5, #KEYS do redis.call('SET', KEYS[i], new_cp) end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[3], '{"g": ' .. ARGV[1] .. ', "c": "' .. new_cp .. '", "switch": true}')
return {'ok', active or ''}
