-- One document of the active generation (after read_prelude.lua).
-- KEYS[4]  the generation's documents (a hash)     ARGV[3]  the document's id
-- Returns {2, doc|nil, checkpoint}: the checkpoint it is current at (Watch streams give it
-- as the document's position).
return {2, redis.call('HGET', KEYS[4], ARGV[3]), checkpoint}
