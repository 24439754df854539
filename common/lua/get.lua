-- One document of the active generation (after read_prelude.lua).
-- ARGV[3]  document id. Returns {2, doc|nil}.
return {2, redis.call('GET', base .. 'doc:' .. ARGV[3])}
