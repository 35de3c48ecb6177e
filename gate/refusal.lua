-- Write back a refusal (sold_out at the edge) this process gave before
-- Redis lost the key: where there is no record, or, while the epoch
-- recovers (epoch.lua), in the place of an in-flight mark of the same
-- payload made during the recovery, an admission given anew since the loss
-- whose process looks at the key again before it queues the order (and
-- then answers this refusal), or over the same refusal given anew since
-- the loss, which it marks as written back, so that its process answers it
-- as the replay it is. A record written back names its writer 'restored'
-- (the owner line). An admission made before the recovery began (only the
-- epoch was lost) or after it stands: its order may be queued.
-- KEYS[1] the key's record, KEYS[2] the gate's epoch.
-- ARGV: the record as written back, its TTL in ms, the payload's
-- fingerprint, the refusal's status and body, the in-flight TTL and the
-- recovery's length and 100 ms, in ms (a mark's deadline less the first is
-- when it was made; the epoch less the second, a little before the
-- recovery began: a pipeline's calls run before its look at the epoch).
-- Returns 1 if it stored the record, 0 if not.
local cur = redis.call('GET', KEYS[1])
local rec = ARGV[1]
if cur then
  local status, fp, owner = string.match(cur, '^(%d+)\n([^\n]*)\n([^\n]*)\n')
  if fp ~= ARGV[3] or owner == 'restored' then return 0 end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local epoch = tonumber(redis.call('GET', KEYS[2]) or '')
  if epoch == nil or epoch <= now then return 0 end
  if status == '0' then
    local deadline = tonumber(string.match(owner, '@(%d+)$') or '')
    if deadline == nil or deadline - tonumber(ARGV[6]) < epoch - tonumber(ARGV[7]) then return 0 end
  else
    local n, rest = string.match(cur, '^[^\n]*\n[^\n]*\n[^\n]*\n(%d+)\n(.*)$')
    if status ~= ARGV[4] or n == nil or string.sub(rest, tonumber(n) + 1) ~= ARGV[5] then return 0 end
    rec = status .. '\n' .. fp .. '\nrestored\n' .. n .. '\n' .. rest
  end
end
redis.call('SET', KEYS[1], rec, 'PX', ARGV[2])
return 1
