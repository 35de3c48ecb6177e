-- Refuse a request whose category's gate stock the caller believes cannot
-- cover it, at half the cost of the admission script.
-- KEYS[1] the key's record, KEYS[2] the category's gate stock.
-- ARGV: sold-out record, quantity, answer ttl ms.
-- Returns false (nil) when the stock is missing or covers the quantity:
-- the caller admits instead. Otherwise the key's record if it has one, or
-- '' after storing the sold-out record under the new key.
local stock = redis.call('GET', KEYS[2])
if not stock or tonumber(stock) >= tonumber(ARGV[2]) then return false end
local old = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'GET', 'PX', ARGV[3])
if old then return old end
return ''
