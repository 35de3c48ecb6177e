-- The gate's epoch, checked at the end of every pipeline of admissions and
-- refusals. Its value is the time (Redis's, in ms) until which it recovers:
-- Redis was found without it (flushed, or restarted without its data), so
-- every process is writing back the answers it remembers (api.Restore),
-- and an answer given anew meanwhile may be one that a process had given
-- otherwise before the loss; the caller looks at the key again once the
-- epoch has recovered. A Redis that never held the epoch (a deployment's
-- first start) cannot be told from one that lost it: its first second
-- recovers too.
-- KEYS[1] the epoch. ARGV[1] how long a new epoch recovers, in ms.
-- Returns {until, now}, both in ms.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = tonumber(redis.call('GET', KEYS[1]) or '')
if epoch == nil then
  epoch = now + tonumber(ARGV[1])
  redis.call('SET', KEYS[1], string.format('%.0f', epoch))
end
return {epoch, now}
