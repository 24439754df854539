-- One document of the active generation (after read_prelude.lua).
-- KEYS[4]  the document. Returns {2, doc|nil}.
return {2, redis.call('GET', KEYS[4])}
