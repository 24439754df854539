-- The projector's view of a live projection.
-- KEYS[1]  {P}:{proj}:active      ARGV[1]  {P}:{proj}
-- ARGV[2]  (the projector's stores) the checkpoint to read: '' for the projection's, or
--          a segment's suffix (':1/4', projector.segments)
-- Returns {generation, checkpoint}, with checkpoint false when the generation vanished,
-- or false when no generation is active; given ARGV[2], also how many segments the
-- generation was split into when switched in (false: not split).
local g = redis.call('GET', KEYS[1])
if not g then return false end
local base = ARGV[1] .. ':g' .. g .. ':checkpoint'
if ARGV[2] == nil then return {g, redis.call('GET', base)} end
return {g, redis.call('GET', base .. ARGV[2]), redis.call('GET', ARGV[1] .. ':g' .. g .. ':segments')}
