-- Admit one order request in one atomic step.
-- KEYS[1] the key's record (a string, see record.go), KEYS[2] the category's gate stock.
-- ARGV: fingerprint, quantity, window ('' when the sale is open), in-flight ttl ms,
--       sold-out record, in-flight record, answer ttl ms.
local rec = redis.call('GET', KEYS[1])
if rec then
  local status, fp = string.match(rec, '^(%d+)\n([^\n]*)\n')
  if fp ~= ARGV[1] then return {'mismatch'} end
  if status ~= '0' then return {'replay', rec} end
  return {'inflight'}
end
if ARGV[3] ~= '' then return {'window'} end
local qty = tonumber(ARGV[2])
local stock = redis.call('GET', KEYS[2])
local taken = 0
if stock then
  stock = tonumber(stock)
  if stock < qty then
    redis.call('SET', KEYS[1], ARGV[5], 'PX', ARGV[7])
    return {'soldout', stock}
  end
  redis.call('DECRBY', KEYS[2], qty)
  taken = qty
end
-- A missing stock key means the gate does not know: admit, the database decides.
redis.call('SET', KEYS[1], ARGV[6], 'PX', ARGV[4])
return {'admitted', taken}
