-- The fleet's retry budget toward one upstream (steady's BudgetConfig,
-- shared): what the fleet's first attempts earned, at most a cap banked,
-- and a floor of retries per second fleet-wide on top (a GCRA).
-- KEYS[1]: the budget, a hash: b (retries banked), t (the floor's
-- theoretical arrival time, us).
-- ARGV: earned, max banked, floor per second, floor burst, key TTL ms,
-- then optionally "now", us (a test's clock).
-- Returns 1 when the retry may go, 0 when the budget is spent.
local now
if ARGV[6] == 'now' then
  now = tonumber(ARGV[7])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local key = KEYS[1]
local ty = redis.call('TYPE', key)['ok']
if ty ~= 'none' and ty ~= 'hash' then
  return redis.error_reply('STEADY wrongtype: ' .. key .. ' holds a ' .. ty .. ', want a hash')
end
local function num(v, d)
  local x = tonumber(v)
  if x == nil or x ~= x or x == math.huge or x == -math.huge then return d end
  return x
end
local earned = math.max(num(ARGV[1], 0), 0)
local maxb = math.max(num(ARGV[2], 0), 0)
local rate = num(ARGV[3], 0)
local burst = math.max(num(ARGV[4], 1), 1)
local ttl = math.max(num(ARGV[5], 600000), 1)
local v = redis.call('HMGET', key, 'b', 't')
local b = math.max(num(v[1], 0), 0)
if earned > 0 and b < maxb then b = math.min(b + earned, maxb) end
local ok = 0
if b >= 1 then
  b = b - 1
  ok = 1
elseif rate > 0 then
  local iv = 1000000 / rate
  local tat = math.max(num(v[2], now), now)
  if tat - now <= (burst - 1) * iv then
    ok = 1
    redis.call('HSET', key, 't', string.format('%.0f', tat + iv))
  end
end
redis.call('HSET', key, 'b', string.format('%.6f', b))
local cur = redis.call('PTTL', key)
if cur == -1 or (cur >= 0 and cur < ttl) then redis.call('PEXPIRE', key, ttl) end
return ok
