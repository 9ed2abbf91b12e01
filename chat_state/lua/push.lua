-- Append to a capped list (history and queues, as in the TypeScript adapters).
-- KEYS[1] list key; ARGV[1] JSON text; ARGV[2] max length (0 = unbounded);
-- ARGV[3] ttl in ms (0 = keep the key's TTL). Returns the new length.
redis.call("rpush", KEYS[1], ARGV[1])
local max = tonumber(ARGV[2])
if max > 0 then
  redis.call("ltrim", KEYS[1], -max, -1)
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call("pexpire", KEYS[1], ttl)
end
return redis.call("llen", KEYS[1])
