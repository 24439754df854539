-- One page of an index of the active generation and its documents (after read_prelude.lua):
-- one call, so the page is one snapshot.
-- KEYS[4]  the index, e.g. '{P}:{proj}:gG:idx:all', '...:idx:category:books'
-- KEYS[5]  the generation's documents (a hash)
-- ARGV[3]  ZRANGE BYLEX REV start: '+' for the first page, '(' .. member after it
-- ARGV[4]  how many members to read (page size + 1)
-- Returns {2, members, docs, checkpoint}: docs[i] is members[i]'s (false: none, which
-- only a damaged projection has).
local members = redis.call(
  'ZRANGE', KEYS[4], ARGV[3], '-', 'BYLEX', 'REV', 'LIMIT', 0, tonumber(ARGV[4]))
if #members == 0 then return {2, members, {}, checkpoint} end
-- Members are '{created_us:016x}|{id}': the id starts at the 18th byte.
local ids = {}
for i, m in ipairs(members) do ids[i] = string.sub(m, 18) end
return {2, members, redis.call('HMGET', KEYS[5], unpack(ids)), checkpoint}
