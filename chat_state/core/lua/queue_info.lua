-- A queue's depth and oldest entry, read at one instant (for inspection).
-- KEYS[1] queue key. Returns {depth, oldest entry}, or nil if no queue is there
-- (nothing, or a value of another type, which no adapter writes there).
if redis.call("type", KEYS[1]).ok ~= "list" then
  return false
end
return {redis.call("llen", KEYS[1]), redis.call("lindex", KEYS[1], 0)}
