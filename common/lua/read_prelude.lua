-- Shared start of every read (get.lua, list.lua): check that the generation the keys were
-- named for is the active one, and that it is whole and fresh enough. Every key is declared
-- in KEYS (none is built here), so a cluster routes the call to the node that holds them and
-- a live reshard redirects it (ASK, TRYAGAIN) instead of the script reading a key that has
-- already moved away.
-- KEYS[1]  {P}:{proj}:active      KEYS[2]  {P}:{proj}:next_gen
-- KEYS[3]  the checkpoint of generation ARGV[1]
-- ARGV[1]  the generation the keys name (the reader's guess: the last one it saw active;
--          '0' names none)        ARGV[2]  required checkpoint ('' = don't check)
-- Early replies: {0, 'building'} no active generation but one is being made,
-- {0, 'absent'} never built, {0, 'lost'} the active generation has vanished,
-- {1} behind the required checkpoint, {3, g} the active generation is g: ask again with
-- its keys.
local gen = redis.call('GET', KEYS[1])
if not gen then
  if redis.call('EXISTS', KEYS[2]) == 1 then return {0, 'building'} end
  return {0, 'absent'}
end
if gen ~= ARGV[1] then return {3, gen} end
local checkpoint = redis.call('GET', KEYS[3])
if not checkpoint then return {0, 'lost'} end
-- Fixed-width digit strings: byte order is the (xid, seq) tuple order.
if ARGV[2] ~= '' and checkpoint < ARGV[2] then return {1} end
