-- Shared start of every read (get.lua, list.lua): resolve the active generation and
-- check it is whole and fresh enough. Generation keys are derived here, after reading
-- `active`, so a read never mixes generations; they share the projection's hash tag, so
-- they are in the slot of the declared keys (one Redis, or one node of a cluster).
-- KEYS[1]  {P}:{proj}:active      KEYS[2]  {P}:{proj}:next_gen
-- ARGV[1]  {P}:{proj}             ARGV[2]  required checkpoint ('' = don't check)
-- Early replies: {0, 'building'} no active generation but one is being made,
-- {0, 'absent'} never built, {0, 'lost'} the active generation has vanished,
-- {1} behind the required checkpoint.
local gen = redis.call('GET', KEYS[1])
if not gen then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {0, 'building'} end
  return {0, 'absent'}
end
local base = ARGV[1] .. ':g' .. gen .. ':'
local checkpoint = redis.call('GET', base .. 'checkpoint')
if not checkpoint then return {0, 'lost'} end
-- Fixed-width digit strings: byte order is the (xid, seq) tuple order.
if ARGV[2] ~= '' and checkpoint < ARGV[2] then return {1} end
