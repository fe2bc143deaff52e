-- Removes one entry, and leaves a tombstone so that a refresh already under
-- way cannot bring it back. ARGV[5] connection id.
--
-- Returns {left (0 or 1), user id, user name, version}; user id and name are
-- '' when there was no such entry.

prune()
local conn = ARGV[5]
redis.call('ZADD', gone_key, now + ttl, conn)
redis.call('ZREMRANGEBYSCORE', gone_key, '-inf', now)
redis.call('PEXPIRE', gone_key, ttl)

local left, uid, name = false, '', ''
local info = redis.call('HGET', info_key, conn)
if info then
  local e = cjson.decode(info)
  uid = e[1]
  name = redis.call('HGET', names_key, uid) or e[2]
  forget(conn, uid)
  left = settle(uid)
else
  redis.call('ZREM', conns_key, conn)
end
return {left and 1 or 0, uid, name, version()}
