-- A live projection's active generation and its checkpoint(s).
-- KEYS[1]  {P}:{proj}:active      KEYS[2]  the checkpoint of generation ARGV[1]
-- KEYS[3..]  (the projector's stores) more keys of that generation to read with it: how
--          many segments it was split into, a segment's checkpoint (projector.segments)
-- ARGV[1]  the generation the keys name (the caller's guess; '0' names none)
-- Returns false when no generation is active; {3, g} when g is active, not ARGV[1]: ask
-- again with its keys; else {g, then the value of KEYS[2], KEYS[3]...} (false: absent,
-- e.g. a generation that has lost its checkpoint).
local g = redis.call('GET', KEYS[1])
if not g then return false end
if g ~= ARGV[1] then return {3, g} end
local found = {g}
for i = 2, #KEYS do found[i] = redis.call('GET', KEYS[i]) end
return found
