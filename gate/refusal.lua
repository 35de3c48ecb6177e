-- Write back a refusal (sold_out at the edge) this process gave before
-- Redis lost the key: where there is no record, or, while the epoch
-- recovers (epoch.lua), in the place of an in-flight mark of the same
-- payload, an admission given anew since the loss whose process checks the
-- key again before it queues the order (and then answers this refusal).
-- An admission made after the recovery stands: its order may be queued.
-- KEYS[1] the key's record, KEYS[2] the gate's epoch.
-- ARGV: the record, its TTL in ms, the payload's fingerprint.
-- Returns 1 if it stored the record, 0 if not.
local cur = redis.call('GET', KEYS[1])
if cur then
  local status, fp = string.match(cur, '^(%d+)\n([^\n]*)\n')
  if status ~= '0' or fp ~= ARGV[3] then return 0 end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local epoch = tonumber(redis.call('GET', KEYS[2]) or '')
  if epoch == nil or epoch <= now then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
