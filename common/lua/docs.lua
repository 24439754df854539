-- The documents of a page list.lua returned, provided nothing changed in between (a batch or
-- a switch): the page is then as one snapshot, as if read by one script.
-- KEYS[1]  {P}:{proj}:active      KEYS[2]  the checkpoint of generation ARGV[1]
-- KEYS[3..]  the documents (members are '{created_us:016x}|{id}': their keys are known)
-- ARGV[1]  the generation         ARGV[2]  the checkpoint list.lua returned
-- Returns {docs} (docs[i] for KEYS[i + 2]), or false when something changed: list again.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return false end
return {redis.call('MGET', unpack(KEYS, 3))}
