-- A queue's depth and oldest entry, read at one instant (for inspection).
-- KEYS[1] queue key. Returns {depth, oldest entry}, or nil if the queue is empty.
local depth = redis.call("llen", KEYS[1])
if depth == 0 then
  return false
end
return {depth, redis.call("lindex", KEYS[1], 0)}
