-- Helpers shared by the append and read scripts (prepended to each).
--
-- A room's stream holds one entry per message. The entry id is "<seq>-0", so
-- the stream is ordered by seq and a seq can be looked up directly; the "ts"
-- field is the message time in Unix milliseconds.

local function entry_seq(id)
  return tonumber(string.match(id, '^(%d+)-'))
end

local function entry_ts(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'ts' then
      return tonumber(fields[i + 1])
    end
  end
  return 0
end

-- oldest_retained returns the lowest seq from which the stream holds messages
-- no older than cutoff (Unix ms), or nil when every message is older.
--
-- Messages are in seq order and, clock skew between gateways aside, in time
-- order too, so the messages past their age are a prefix of the stream. The
-- common case (nothing aged) costs one range read; otherwise a binary search
-- over seqs finds the end of the prefix in O(log n) range reads.
local function oldest_retained(log, cutoff)
  local head = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)
  if #head == 0 then
    return nil
  end
  local lo = entry_seq(head[1][1])
  if entry_ts(head[1][2]) >= cutoff then
    return lo
  end
  local tail = redis.call('XREVRANGE', log, '+', '-', 'COUNT', 1)
  local hi = entry_seq(tail[1][1])
  if entry_ts(tail[1][2]) < cutoff then
    return nil
  end
  -- Invariant: the entries up to seq lo are aged; the first entry at or
  -- after seq hi is retained.
  while hi - lo > 1 do
    local mid = math.floor((lo + hi) / 2)
    local e = redis.call('XRANGE', log, string.format('%d-0', mid), '+', 'COUNT', 1)
    if entry_ts(e[1][2]) < cutoff then
      lo = mid
    else
      hi = mid
    end
  end
  return hi
end

