-- Adds or renews one entry. ARGV[5] connection id, ARGV[6] user id,
-- ARGV[7] user name, ARGV[8] the entry's info record.
--
-- Returns {joined (0 or 1), version}.

prune()
local joined = upsert(ARGV[5], ARGV[6], ARGV[7], ARGV[8], now + ttl, false)
local v = version()
touch()
return {joined and 1 or 0, v}
