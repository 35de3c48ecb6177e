-- Admit one order request in one atomic step.
-- KEYS[1] the key's record (a string, see record.go), KEYS[2] the category's gate stock.
-- ARGV: fingerprint, quantity, window ('' when the sale is open), in-flight ms,
--       sold-out record, in-flight record up to its owner's '@', answer ttl ms,
--       in-flight record after its deadline up to its body, this attempt's
--       acceptance time (unix microseconds; the in-flight record's body),
--       the category's remaining as the catalog last read it ('' unknown,
--       '?' to answer 'nostock' where the gate lost the stock), the prefix
--       of the processes' live marks, this attempt's process ('' none),
--       the live mark's TTL in ms.
-- An in-flight record's owner ends in '@' and the time (Redis's, in ms) after
-- which its attempt cannot be publishing any more. It is kept as long as an
-- answer: if the attempt's process died before answering, its order may be
-- queued or not, and a retry after that time takes the key over and queues
-- the order again (the workers recognise it by its id), whatever the stock
-- says now, so that a key whose order exists is never answered sold_out.
-- The retry keeps the dead attempt's acceptance time, with which its order
-- may be queued already: the order and every answer read the same time.
-- An owner '<process>.<attempt>' names its process, whose live mark this
-- script and the process's canary keep fresh: a mark whose process has
-- none any more (it died) is taken over at once, not at its deadline. A
-- live process wrongly taken for dead only has its order queued twice,
-- which the workers decide once, and both attempts answer the same 202.
-- Live marks are not among KEYS: like the record and the stock, which
-- share no hash slot, they need one Redis, not a cluster.
-- Redis's clock in ms, read only by the paths that need it.
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function mark(at)
  local deadline = string.format('%.0f', now() + tonumber(ARGV[4]))
  redis.call('SET', KEYS[1], ARGV[6] .. deadline .. ARGV[8] .. at, 'PX', ARGV[7])
  if ARGV[12] ~= '' then
    redis.call('SET', ARGV[11] .. ARGV[12], '1', 'PX', ARGV[13])
  end
end
-- Whether the attempt that owns an in-flight mark may still be publishing.
local function inflight(owner)
  local deadline = tonumber(string.match(owner, '@(%d+)$') or '')
  if deadline == nil then return true end
  if now() >= deadline then return false end
  local process = string.match(owner, '^([^.@]+)%.')
  return process == nil or redis.call('EXISTS', ARGV[11] .. process) == 1
end
local rec = redis.call('GET', KEYS[1])
if rec then
  local status, fp, owner = string.match(rec, '^(%d+)\n([^\n]*)\n([^\n]*)\n')
  if fp ~= ARGV[1] then return {'mismatch'} end
  if status ~= '0' then return {'replay', rec} end
  if inflight(owner) then return {'inflight'} end
  local n, rest = string.match(rec, '^[^\n]*\n[^\n]*\n[^\n]*\n(%d+)\n(.*)$')
  local at = ''
  if n then at = string.sub(rest, tonumber(n) + 1) end
  if at == '' then at = ARGV[9] end
  mark(at)
  return {'admitted', 0, at}
end
if ARGV[3] ~= '' then return {'window'} end
local qty = tonumber(ARGV[2])
local stock = redis.call('GET', KEYS[2])
if not stock and ARGV[10] == '?' then
  -- The caller rebuilds the stock from what it knows, then asks again.
  return {'nostock'}
end
if not stock and ARGV[10] ~= '' then
  -- The gate lost the category's stock (Redis flushed or restarted): start
  -- it from the catalog's remaining, an upper bound, rather than admit
  -- blind until the next reconcile. Queued orders are not in it yet, so it
  -- may admit a few too many, which the workers reject.
  redis.call('SET', KEYS[2], ARGV[10])
  stock = ARGV[10]
end
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
-- A stock still missing means the gate does not know: admit, the database decides.
mark(ARGV[9])
return {'admitted', taken}
