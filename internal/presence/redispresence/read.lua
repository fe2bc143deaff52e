-- Reads a room's member list. ARGV[5] mode: 'poll' returns early when the
-- version is ARGV[6]; 'read' always reads. ARGV[7] limit: user ids and names
-- are returned only when the room has at most that many users (-1: always).
--
-- Returns {version} when polling finds ARGV[6], {version, count} when the room
-- is over the limit, and {version, count, user ids, names} otherwise. Ids
-- and names are in no particular order.

prune()
local v = version()
if ARGV[5] == 'poll' and v == ARGV[6] then
  return {v}
end
local count = redis.call('ZCOUNT', users_key, live_min, '+inf')
local limit = tonumber(ARGV[7])
if limit >= 0 and count > limit then
  return {v, count}
end
local uids = redis.call('ZRANGEBYSCORE', users_key, live_min, '+inf')
local names = {}
-- HMGET in slices: Lua's unpack has a limit of a few thousand values.
for i = 1, #uids, 1000 do
  local part = redis.call('HMGET', names_key, unpack(uids, i, math.min(i + 999, #uids)))
  for _, name in ipairs(part) do
    names[#names + 1] = name or ''
  end
end
return {v, count, uids, names}
