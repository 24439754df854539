-- Make a rebuilt generation active, unless it is behind the active one (so the live
-- runner continues from a checkpoint at least as far as the one it had).
-- KEYS[1]  {P}:{proj}:active      KEYS[2]  the new generation's checkpoint
-- KEYS[3]  the new generation's segment count, KEYS[4..]  its segments' checkpoints
--          (projector.segments; none: the projection is not split)
-- ARGV[1]  the new generation     ARGV[2]  {P}:{proj}
-- ARGV[3]  the changes channel, told of the switch and the new checkpoint (near-caches
--          drop what they hold)
-- Returns {'ok', previous generation or ''}, {'behind', the active checkpoint} or
-- {'lost', ''} when the new generation has no checkpoint (it vanished).
local active = redis.call('GET', KEYS[1])
if active == ARGV[1] then return {'ok', ''} end
local new_cp = redis.call('GET', KEYS[2])
if not new_cp then return {'lost', ''} end
if active then
  local cur = redis.call('GET', ARGV[2] .. ':g' .. active .. ':checkpoint') or ''
  if new_cp < cur then return {'behind', cur} end
end
-- A copy is built whole; split here, every segment starting where the copy stands.
if #KEYS > 3 then
  redis.call('SET', KEYS[3], #KEYS - 3)
  for i = 4, #KEYS do redis.call('SET', KEYS[i], new_cp) end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[3], '{"g": ' .. ARGV[1] .. ', "c": "' .. new_cp .. '", "switch": true}')
return {'ok', active or ''}
