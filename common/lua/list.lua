-- One page of an index of the active generation, with its documents (after read_prelude.lua).
-- ARGV[3]  index name below the generation, e.g. 'idx:all', 'idx:category:books'
-- ARGV[4]  ZRANGE BYLEX REV start: '+' for the first page, '(' .. member after it
-- ARGV[5]  how many members to read (page size + 1)
-- Returns {2, members, docs} with docs[i] for members[i].
local members = redis.call(
  'ZRANGE', base .. ARGV[3], ARGV[4], '-', 'BYLEX', 'REV', 'LIMIT', 0, tonumber(ARGV[5]))
if #members == 0 then return {2, {}, {}} end
local keys = {}
for i, member in ipairs(members) do
  -- member = '{created_us:016x}|{id}'
  keys[i] = base .. 'doc:' .. string.sub(member, 18)
end
return {2, members, redis.call('MGET', unpack(keys))}
