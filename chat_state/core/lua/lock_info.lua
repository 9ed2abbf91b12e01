-- A lock's token and remaining TTL, read at one instant (for inspection).
-- KEYS[1] lock key. Returns {token, pttl}, or nil if no lock is held there (nothing,
-- or a value of another type, which no adapter writes there).
if redis.call("type", KEYS[1]).ok ~= "string" then
  return false
end
return {redis.call("get", KEYS[1]), redis.call("pttl", KEYS[1])}
