-- Append to a capped list (history and queues, as in the TypeScript adapters).
-- KEYS[1] list key; ARGV[1] JSON text; ARGV[2] max length (0 = unbounded);
-- ARGV[3] ttl in ms (0 = keep the key's TTL). Returns the new length.
-- The numbers are checked before the first write (decimal digits only), and passed on
-- as the text they came in: Lua would write a large number as "1e+17", which Redis
-- refuses.
if #ARGV ~= 3 or not ARGV[2]:match("^%d+$") or not ARGV[3]:match("^%d+$") then
  return redis.error_reply("ERR max length and ttl must be non-negative integers")
end
local max, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local length = redis.call("rpush", KEYS[1], ARGV[1])
if max > 0 and length > max then
  redis.call("ltrim", KEYS[1], "-" .. ARGV[2], -1)
  length = max
end
if ttl > 0 then
  redis.call("pexpire", KEYS[1], ARGV[3])
end
return length
