-- Undo an admission whose order could not be queued.
-- KEYS[1] the key's record, KEYS[2] the category's gate stock.
-- ARGV: owner of the admission, tickets it took.
local rec = redis.call('GET', KEYS[1])
if rec then
  local status, fp, owner = string.match(rec, '^(%d+)\n([^\n]*)\n([^@\n]*)')
  if status == '0' and owner == ARGV[1] then
    redis.call('DEL', KEYS[1])
  end
end
local taken = tonumber(ARGV[2])
if taken > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('INCRBY', KEYS[2], taken)
end
return 1
