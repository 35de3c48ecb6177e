-- Admit one order request in one atomic step.
-- KEYS[1] the key's record (a hash), KEYS[2] the category's gate stock.
-- ARGV: fingerprint, customer, quantity, window ('' when the sale is open),
--       in-flight ttl ms, sold-out status, sold-out body, answer ttl ms, owner.
local rec = redis.call('HMGET', KEYS[1], 'fp', 'status', 'body')
if rec[1] then
  if rec[1] ~= ARGV[1] then return {'mismatch'} end
  if rec[2] then return {'replay', rec[2], rec[3]} end
  return {'inflight'}
end
if ARGV[4] ~= '' then return {'window'} end
local qty = tonumber(ARGV[3])
local stock = redis.call('GET', KEYS[2])
local taken = 0
if stock then
  if tonumber(stock) < qty then
    redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'cust', ARGV[2], 'status', ARGV[6], 'body', ARGV[7])
    redis.call('PEXPIRE', KEYS[1], ARGV[8])
    return {'soldout'}
  end
  redis.call('DECRBY', KEYS[2], qty)
  taken = qty
end
-- A missing stock key means the gate does not know: admit, the database decides.
redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'cust', ARGV[2], 'owner', ARGV[9])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {'admitted', taken}
