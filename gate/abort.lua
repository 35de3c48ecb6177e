-- Undo an admission whose order could not be queued.
-- KEYS[1] the key's record, KEYS[2] the category's gate stock.
-- ARGV: owner of the admission, tickets it took, '1' if it took the key
-- over from an attempt that died (admit.lua).
-- The attempt's mark goes, unless it took the key over: the dead attempt's
-- order may be queued, so the mark stays, its deadline passed, for the next
-- retry to take over at once, with the dead attempt's time.
-- The tickets go back to the stock unless another attempt holds the key
-- now: one that took it over (this attempt's process was taken for dead),
-- whose order is queued with none of its own, or an answer that stands.
local rec = redis.call('GET', KEYS[1])
local mine = true
if rec then
  local status, fp, owner, rest = string.match(rec, '^(%d+)\n([^\n]*)\n([^@\n]*)@[^\n]*(\n.*)$')
  mine = status == '0' and owner == ARGV[1]
  if mine then
    if ARGV[3] == '1' then
      local dead = status .. '\n' .. fp .. '\n' .. owner .. '@0' .. rest
      local ttl = redis.call('PTTL', KEYS[1]) -- not KEEPTTL: Redis 5 runs this too
      if ttl > 0 then
        redis.call('SET', KEYS[1], dead, 'PX', ttl)
      else
        redis.call('SET', KEYS[1], dead)
      end
    else
      redis.call('DEL', KEYS[1])
    end
  end
end
local taken = tonumber(ARGV[2])
if mine and taken > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('INCRBY', KEYS[2], taken)
end
return 1
