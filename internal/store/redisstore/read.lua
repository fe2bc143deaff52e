-- Reads a room's state and a range of its messages in one atomic step, so
-- that a page's epoch and seq always describe its messages.
--
-- KEYS[1] meta hash, KEYS[2] log stream.
-- ARGV[1] mode: 'recent', 'after' or 'before'; ARGV[2] the bound seq for
-- 'after' and 'before' (exclusive); ARGV[3] limit; ARGV[4] cutoff (Unix ms):
-- messages older than it are not returned.
--
-- Returns {epoch, seq, entries}: epoch '' and seq 0 for a room without
-- history. Entries are newest first for 'recent' and 'before', oldest first
-- for 'after'.

local cutoff = tonumber(ARGV[4])
local cur = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'last')
if not cur[1] or (cur[3] and tonumber(cur[3]) < cutoff) then
  return {'', 0, {}}
end
local epoch, seq = cur[1], tonumber(cur[2]) or 0
local limit = tonumber(ARGV[3])
if limit <= 0 then
  return {epoch, seq, {}}
end
local first = oldest_retained(KEYS[2], cutoff)
if not first then
  return {epoch, seq, {}}
end

local mode, bound = ARGV[1], tonumber(ARGV[2])
local from = string.format('%d-0', first)
local entries = {}
if mode == 'recent' then
  entries = redis.call('XREVRANGE', KEYS[2], '+', from, 'COUNT', limit)
elseif mode == 'after' then
  if bound >= first then
    entries = redis.call('XRANGE', KEYS[2], string.format('(%d-0', bound), '+', 'COUNT', limit)
  else
    entries = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', limit)
  end
elseif mode == 'before' then
  if bound > first then
    entries = redis.call('XREVRANGE', KEYS[2], string.format('(%d-0', bound), from, 'COUNT', limit)
  end
else
  return redis.error_reply('unknown read mode ' .. mode)
end
return {epoch, seq, entries}
