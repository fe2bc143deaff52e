-- Renews (or adds again) entries of one room. ARGV[5..] hold four values per
-- entry: connection id, user id, user name, info record.
--
-- Most entries are live and unchanged: those are renewed a thousand at a
-- time, with one ZMSCORE, one HMGET and two ZADDs, since in Lua each Redis
-- call costs far more than the work it does. The others go through upsert.
--
-- Returns the room's version.

prune()
local exp = now + ttl
local n = (#ARGV - 4) / 4
for first = 0, n - 1, 1000 do
  local count = math.min(1000, n - first)
  local conns = {}
  for k = 1, count do
    conns[k] = ARGV[1 + (first + k) * 4]
  end
  local scores = redis.call('ZMSCORE', conns_key, unpack(conns))
  local infos = redis.call('HMGET', info_key, unpack(conns))
  local zc, zu = {}, {}
  for k = 1, count do
    local i = 1 + (first + k) * 4
    local s = scores[k]
    if s and tonumber(s) > now and infos[k] == ARGV[i + 3] then
      zc[#zc + 1] = exp
      zc[#zc + 1] = ARGV[i]
      zu[#zu + 1] = exp
      zu[#zu + 1] = ARGV[i + 1]
    else
      upsert(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], exp, true)
    end
  end
  if #zc > 0 then
    redis.call('ZADD', conns_key, unpack(zc))
    redis.call('ZADD', users_key, 'GT', unpack(zu))
  end
end
local v = version()
touch()
return v
