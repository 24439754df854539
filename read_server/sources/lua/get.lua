-- One document of the active generation, optionally only once fresh enough.
-- KEYS[1]  {P}:{proj}:active
-- ARGV[1]  {P}:{proj}            (generation keys are {P}:{proj}:g{G}:...)
-- ARGV[2]  required checkpoint ('' = don't check), Position.to_checkpoint() form
-- ARGV[3]  document id
-- Returns {0} never built, {1} behind the required checkpoint, {2, doc|nil} answer.
-- Generation keys are derived here, after resolving `active`, so the read never
-- mixes generations; this assumes a single Redis node (not Cluster).
local gen = redis.call('GET', KEYS[1])
if not gen then
  return {0}
end
local base = ARGV[1] .. ':g' .. gen .. ':'
if ARGV[2] ~= '' then
  -- Fixed-width digit strings: byte order is the (xid, seq) tuple order.
  local checkpoint = redis.call('GET', base .. 'checkpoint') or ''
  if checkpoint < ARGV[2] then
    return {1}
  end
end
return {2, redis.call('GET', base .. 'doc:' .. ARGV[3])}
