-- One page of an index of the active generation (after read_prelude.lua): its members and
-- the checkpoint they were read at; docs.lua then reads their documents.
-- KEYS[4]  the index, e.g. '{P}:{proj}:gG:idx:all', '...:idx:category:books'
-- ARGV[3]  ZRANGE BYLEX REV start: '+' for the first page, '(' .. member after it
-- ARGV[4]  how many members to read (page size + 1)
-- Returns {2, members, checkpoint, generation}.
return {2, redis.call(
  'ZRANGE', KEYS[4], ARGV[3], '-', 'BYLEX', 'REV', 'LIMIT', 0, tonumber(ARGV[4])), checkpoint, gen}
