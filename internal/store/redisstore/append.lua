-- Appends one message to a room, atomically: epoch, dedup, seq, stream entry,
-- trimming and expiry happen together or not at all.
--
-- KEYS[1] meta hash (epoch, seq, last), KEYS[2] log stream, KEYS[3] dedup
-- sorted set (member: user and client_msg_id, score: seq). All three carry the
-- room as a hash tag, so they share a cluster slot.
--
-- ARGV[1] epoch to use if the room has no history, ARGV[2] message id,
-- ARGV[3] ts (Unix ms), ARGV[4] user id, ARGV[5] user name, ARGV[6] text,
-- ARGV[7] client_msg_id ('' for none), ARGV[8] dedup member, ARGV[9] max
-- len, ARGV[10] max age (ms).
--
-- Returns {0, epoch, seq} for a new message, or {1, epoch, seq, fields} for a
-- repeat, fields being the original's stream entry.

local meta, log, dedup = KEYS[1], KEYS[2], KEYS[3]
local ts = tonumber(ARGV[3])
local maxage = tonumber(ARGV[10])
local cutoff = ts - maxage
local cmid, member = ARGV[7], ARGV[8]

local cur = redis.call('HMGET', meta, 'epoch', 'last')
local epoch, last = cur[1], tonumber(cur[2])
if not epoch or (last and last < cutoff) then
  -- The room's history is gone (never written, expired or flushed) or idle
  -- past its age: start a new epoch, and drop whatever was left of the old
  -- one so its seqs can never mix with the new ones.
  epoch, last = ARGV[1], nil
  redis.call('DEL', meta, log, dedup)
  redis.call('HSET', meta, 'epoch', epoch, 'seq', 0)
end

if cmid ~= '' then
  local score = redis.call('ZSCORE', dedup, member)
  if score then
    local id = string.format('%d-0', tonumber(score))
    local e = redis.call('XRANGE', log, id, id)
    if #e > 0 and entry_ts(e[1][2]) >= cutoff then
      return {1, epoch, entry_seq(e[1][1]), e[1][2]}
    end
    -- The original is no longer retained: this is a new message.
    redis.call('ZREM', dedup, member)
  end
end

local seq = redis.call('HINCRBY', meta, 'seq', 1)
redis.call('XADD', log, 'MAXLEN', '~', ARGV[9], string.format('%d-0', seq),
  'id', ARGV[2], 'ts', ARGV[3], 'uid', ARGV[4], 'uname', ARGV[5],
  'text', ARGV[6], 'cmid', cmid)
if not last or ts > last then
  redis.call('HSET', meta, 'last', ARGV[3])
end
if cmid ~= '' then
  redis.call('ZADD', dedup, seq, member)
end

-- Now and then, drop messages past their age and dedup entries of messages
-- no longer retained, so both stay bounded by the retention.
if seq % 100 == 0 then
  local first = oldest_retained(log, cutoff)
  if first then
    redis.call('XTRIM', log, 'MINID', string.format('%d-0', first))
    redis.call('ZREMRANGEBYSCORE', dedup, '-inf', string.format('(%d', first))
  end
end

-- An idle room's history expires MaxAge after its last message.
redis.call('PEXPIRE', meta, maxage)
redis.call('PEXPIRE', log, maxage)
redis.call('PEXPIRE', dedup, maxage)
return {0, epoch, seq}
