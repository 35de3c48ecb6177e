-- Store the answer this process gave a key whose order it accepted, where
-- Redis lost it: the key's order exists (the broker confirmed it), so the
-- answer takes the place of no record, of an in-flight mark of the same
-- payload (an attempt whose answer was never stored, or a retry elsewhere
-- that can only queue the order again) and of a sold_out stored for that
-- payload after Redis lost the key (never true of a key whose order
-- exists). Any other record stands: a stored 202, or another payload's.
-- The 202 of a decided order ('1' in ARGV[4]: rebuilt from the order as
-- PostgreSQL holds it) also takes the place of another 202 of its payload:
-- one given while Redis had lost the key and no process knew the order,
-- with another accepted_at, which is wrong for ever after.
-- KEYS[1] the key's record.
-- ARGV: the record to store, its TTL in ms, the payload's fingerprint,
-- '1' if the order is decided.
-- Returns false if it stored the record, else the record that stands.
local cur = redis.call('GET', KEYS[1])
if cur then
  local status, fp = string.match(cur, '^(%d+)\n([^\n]*)\n')
  if fp ~= ARGV[3] or (status == '202' and (ARGV[4] ~= '1' or cur == ARGV[1])) then
    return cur
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
