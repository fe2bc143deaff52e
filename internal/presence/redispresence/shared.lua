-- Helpers shared by every presence script (prepended to each).
--
-- A room's presence is seven keys, all with the room as hash tag:
--   KEYS[1] conns  sorted set: connection id -> expiry (Unix ms)
--   KEYS[2] info   hash: connection id -> JSON [user id, user name, gateway],
--                  encoded by the gateway
--   KEYS[3] tabs   sorted set, all scores 0: "<len(user id)>:<user id><conn id>",
--                  so that ZRANGEBYLEX lists one user's connections
--   KEYS[4] users  sorted set: user id -> latest expiry of their connections
--   KEYS[5] names  hash: user id -> the name members see
--   KEYS[6] meta   hash: epoch, n (the room's version is "<epoch>:<n>")
--   KEYS[7] gone   sorted set: removed connection id -> end of its tombstone
--
-- ARGV[1] now (Unix ms), ARGV[2] ttl (ms), ARGV[3] an epoch to use if the
-- room has none, ARGV[4] how many expired connections and users one call
-- deletes at most. The rest is the script's own.
--
-- An entry is live while its expiry is after now; a user is live while their
-- users score is, which is the latest expiry of their connections. Reads only
-- count what is live, so what expired but is not deleted yet never shows.

local conns_key, info_key, tabs_key, users_key, names_key, meta_key, gone_key =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local new_epoch = ARGV[3]
local prune_limit = tonumber(ARGV[4])
local live_min = '(' .. ARGV[1]

-- changed is set when the member list (users and their names) changed, so
-- that version() gives the room a new version.
local changed = false

local function tab(uid, conn)
  return #uid .. ':' .. uid .. conn
end

local function uid_of(info)
  return cjson.decode(info)[1]
end

-- forget deletes a connection's entry, leaving its user's record alone.
local function forget(conn, uid)
  redis.call('ZREM', conns_key, conn)
  redis.call('HDEL', info_key, conn)
  redis.call('ZREM', tabs_key, tab(uid, conn))
end

-- settle sets a user's expiry to the latest of the connections they have
-- left, or deletes the user if none is live; it returns true if a live user
-- was deleted.
local function settle(uid)
  local prefix = tab(uid, '')
  -- Connection ids are UTF-8, which never has a 0xff byte.
  local rest = redis.call('ZRANGEBYLEX', tabs_key, '[' .. prefix, '(' .. prefix .. '\255')
  local best = nil
  for _, member in ipairs(rest) do
    local s = redis.call('ZSCORE', conns_key, string.sub(member, #prefix + 1))
    if s then
      s = tonumber(s)
      if not best or s > best then
        best = s
      end
    end
  end
  if best and best > now then
    redis.call('ZADD', users_key, best, uid)
    return false
  end
  local s = redis.call('ZSCORE', users_key, uid)
  if not s then
    return false
  end
  redis.call('ZREM', users_key, uid)
  redis.call('HDEL', names_key, uid)
  if tonumber(s) > now then
    changed = true
    return true
  end
  return false
end

-- prune deletes up to prune_limit expired connections and as many expired
-- users, so every call does bounded work; what is left over is invisible to
-- reads anyway and goes on a later call (or with the keys' expiry).
local function prune()
  local dead = redis.call('ZRANGEBYSCORE', conns_key, '-inf', now, 'LIMIT', 0, prune_limit)
  for _, conn in ipairs(dead) do
    local info = redis.call('HGET', info_key, conn)
    if info then
      forget(conn, uid_of(info))
    else
      redis.call('ZREM', conns_key, conn)
    end
  end
  local expired = redis.call('ZRANGEBYSCORE', users_key, '-inf', now, 'LIMIT', 0, prune_limit)
  for _, uid in ipairs(expired) do
    redis.call('ZREM', users_key, uid)
    redis.call('HDEL', names_key, uid)
  end
  if #expired > 0 then
    -- They were members when the last version was given, or else they
    -- would have been pruned then.
    changed = true
  end
end

-- upsert adds or renews one entry to expire at exp and returns whether its
-- user joined. enc is the entry's info record as the gateway encoded it. With
-- refreshing set, a connection removed less than a TTL ago is left out (a
-- refresh racing a leave); otherwise (an add) its tombstone is lifted.
local function upsert(conn, uid, name, enc, exp, refreshing)
  local old = redis.call('HGET', info_key, conn)
  if old == enc then
    local s = redis.call('ZSCORE', conns_key, conn)
    if s and tonumber(s) > now then
      -- A live entry, renewed.
      redis.call('ZADD', conns_key, exp, conn)
      redis.call('ZADD', users_key, 'GT', exp, uid)
      return false
    end
  end
  if refreshing then
    local g = redis.call('ZSCORE', gone_key, conn)
    if g and tonumber(g) > now then
      return false
    end
  else
    redis.call('ZREM', gone_key, conn)
  end
  local prev = redis.call('ZSCORE', users_key, uid)
  local was_live = prev and tonumber(prev) > now
  if old then
    local old_uid = uid_of(old)
    forget(conn, old_uid)
    if old_uid ~= uid then
      settle(old_uid)
    end
  end
  redis.call('ZADD', conns_key, exp, conn)
  redis.call('HSET', info_key, conn, enc)
  redis.call('ZADD', tabs_key, 0, tab(uid, conn))
  redis.call('ZADD', users_key, 'GT', exp, uid)
  if not was_live then
    changed = true
  end
  if redis.call('HGET', names_key, uid) ~= name then
    redis.call('HSET', names_key, uid, name)
    changed = true
  end
  return not was_live
end

-- version returns the room's version, first giving it a new one if the
-- member list changed. A room without live users has version ''; once it has
-- no connections either, it has no keys but its tombstones.
local function version()
  if redis.call('ZCOUNT', users_key, live_min, '+inf') == 0 then
    if redis.call('EXISTS', conns_key) == 0 then
      redis.call('DEL', info_key, tabs_key, users_key, names_key, meta_key)
    else
      -- Expired connections are still to be deleted; the next user starts
      -- a new epoch.
      redis.call('DEL', meta_key)
    end
    return ''
  end
  local cur = redis.call('HMGET', meta_key, 'epoch', 'n')
  local epoch, n = cur[1], cur[2]
  if not epoch then
    -- The room had nobody, or its meta was lost: a new epoch, so that no
    -- earlier version can come back.
    epoch = new_epoch
    redis.call('HSET', meta_key, 'epoch', epoch, 'n', 0)
    redis.call('PEXPIRE', meta_key, ttl)
    changed = true
  end
  if changed then
    n = redis.call('HINCRBY', meta_key, 'n', 1)
  end
  return epoch .. ':' .. n
end

-- touch makes the room's keys expire a TTL after this write: past the
-- expiry of every entry in them, so a room nobody refreshes disappears with
-- nobody cleaning up.
local function touch()
  redis.call('PEXPIRE', conns_key, ttl)
  redis.call('PEXPIRE', info_key, ttl)
  redis.call('PEXPIRE', tabs_key, ttl)
  redis.call('PEXPIRE', users_key, ttl)
  redis.call('PEXPIRE', names_key, ttl)
  redis.call('PEXPIRE', meta_key, ttl)
end
