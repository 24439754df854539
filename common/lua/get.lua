-- One document of the active generation (after read_prelude.lua).
-- KEYS[4]  the document. Returns {2, doc|nil, checkpoint}: the checkpoint it is current at
-- (Watch streams give it as the document's position).
return {2, redis.call('GET', KEYS[4]), checkpoint}
