-- Undo an admission whose order could not be queued.
-- KEYS[1] the key's record, KEYS[2] the category's gate stock.
-- ARGV: owner of the admission, tickets it took, its acceptance time.
-- A mark whose acceptance time is not the attempt's own was inherited from
-- an attempt that died (admit.lua): that attempt's order may be queued, so
-- the mark stays, past its deadline, for the next retry to take over with
-- that time. Any other mark of this attempt goes.
local rec = redis.call('GET', KEYS[1])
if rec then
  local status, fp, owner, n, rest = string.match(rec, '^(%d+)\n([^\n]*)\n([^@\n]*)@[^\n]*\n(%d+)\n(.*)$')
  if status == '0' and owner == ARGV[1] then
    local at = string.sub(rest, tonumber(n) + 1)
    if at == '' or at == ARGV[3] then
      redis.call('DEL', KEYS[1])
    else
      redis.call('SET', KEYS[1], status .. '\n' .. fp .. '\n' .. owner .. '@0\n' .. n .. '\n' .. rest, 'KEEPTTL')
    end
  end
end
local taken = tonumber(ARGV[2])
if taken > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('INCRBY', KEYS[2], taken)
end
return 1
