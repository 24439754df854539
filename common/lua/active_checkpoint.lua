-- The projector's view of a live projection.
-- KEYS[1]  {P}:{proj}:active      ARGV[1]  {P}:{proj}
-- Returns {generation, checkpoint}, with checkpoint false when the generation vanished,
-- or false when no generation is active.
local g = redis.call('GET', KEYS[1])
if not g then return false end
return {g, redis.call('GET', ARGV[1] .. ':g' .. g .. ':checkpoint')}
