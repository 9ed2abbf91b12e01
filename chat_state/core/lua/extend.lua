-- Give a lock a fresh TTL (from now) only if it is still held under the caller's
-- token; never recreates an expired or force-released lock.
-- KEYS[1] lock key; ARGV[1] token; ARGV[2] ttl in ms. Returns 1 if extended, else 0.
if redis.call("get", KEYS[1]) == ARGV[1] then
  return redis.call("pexpire", KEYS[1], ARGV[2])
end
return 0
