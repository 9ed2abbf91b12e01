-- Release a lock only if it is still held under the caller's token.
-- KEYS[1] lock key; ARGV[1] token. Returns 1 if deleted, else 0.
if redis.call("get", KEYS[1]) == ARGV[1] then
  return redis.call("del", KEYS[1])
end
return 0
