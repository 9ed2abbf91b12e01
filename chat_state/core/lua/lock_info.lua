-- A lock's token and remaining TTL, read at one instant (for inspection).
-- KEYS[1] lock key. Returns {token, pttl}, or nil if the lock is not held.
local token = redis.call("get", KEYS[1])
if not token then
  return false
end
return {token, redis.call("pttl", KEYS[1])}
