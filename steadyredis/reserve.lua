-- One partition's shared pacing state, changed atomically on Redis's clock.
--
-- KEYS[1]  hash: the partition's budget. seq (reservation counter);
--          per window ID: t:ID (theoretical arrival time, us), r:ID (rate,
--          units/s), b:ID (burst), n:ID (cumulative cost reserved);
--          cool (cooldown end, us); os, o, ot (newest observation: its seq,
--          its windows as JSON, when it was published, us).
-- KEYS[2]  sorted set: heartbeats, instance ID scored by last reservation.
-- KEYS[3]  hash: the upstream's breaker. st (open or half), u (until, us).
--
-- ARGV: 1 instance ID, 2 key TTL (ms), 3 settlement JSON or "",
--       4 window count (-1: settle only), 5 max wait (us, -1: none),
--       6 observation seq the caller has, 7 heartbeat TTL (us),
--       8 probe timeout (us), then per window: ID, cost, rate, burst.
--
-- Returns {wait us, refused 0/1, seq, breaker 0 closed/1 probe/2 open,
--          fleet, observation seq, observation JSON, observation age us,
--          issued per window...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local p, hb, brk = KEYS[1], KEYS[2], KEYS[3]
local ttl = tonumber(ARGV[2])

local function num(v, d)
  if v then return tonumber(v) end
  return d
end
local function fmt(v) return string.format('%.0f', v) end
local function expire(key, untilus)
  local ms = ttl
  if untilus > now then ms = ms + math.ceil((untilus - now) / 1000) end
  redis.call('PEXPIRE', key, math.min(ms, 1e12)) -- at most about 30 years
end

local latest = now -- latest time any state written here matters

-- Settlement: what earlier requests showed, applied before reserving.
if ARGV[3] ~= '' then
  local s = cjson.decode(ARGV[3])
  if s.u then
    for _, u in ipairs(s.u) do
      local v = redis.call('HMGET', p, 'r:' .. u[1], 't:' .. u[1])
      local r, tat = num(v[1], 0), num(v[2], nil)
      if r > 0 and tat then
        tat = math.max(tat + u[2] * 1000000 / r, now)
        redis.call('HSET', p, 't:' .. u[1], fmt(tat))
        redis.call('HINCRBY', p, 'n:' .. u[1], fmt(u[2]))
        latest = math.max(latest, tat)
      end
    end
  end
  if s.o and s.o.s > num(redis.call('HGET', p, 'os'), 0) then
    redis.call('HSET', p, 'os', fmt(s.o.s), 'o', cjson.encode(s.o.w), 'ot', fmt(now))
    -- What the server says remains, less what the fleet reserved after
    -- the observed request, caps what the shared budget holds; a debt is
    -- repaid by the window's reset at the latest.
    for _, w in ipairs(s.o.w) do
      local id, rem, reset, iss = w[1], w[3], w[4], w[5]
      local v = redis.call('HMGET', p, 'r:' .. id, 'b:' .. id, 'n:' .. id, 't:' .. id)
      local r = num(v[1], 0)
      if rem >= 0 and iss >= 0 and r > 0 then
        local b, n, tat = num(v[2], 1), num(v[3], 0), num(v[4], now)
        local per = 1000000 / r
        local target = rem - math.max(n - iss, 0)
        local tmin = now + (b - target) * per
        if reset >= 0 then tmin = math.min(tmin, now + b * per + reset) end
        if tmin > tat then
          redis.call('HSET', p, 't:' .. id, fmt(tmin))
          latest = math.max(latest, tmin)
        end
      end
    end
  end
  if s.c and s.c > 0 then
    local untl = now + s.c
    if untl > num(redis.call('HGET', p, 'cool'), 0) then
      redis.call('HSET', p, 'cool', fmt(untl))
      latest = math.max(latest, untl)
    end
  end
  if s.t and s.t > 0 then
    local untl = now + s.t
    local cur = redis.call('HMGET', brk, 'st', 'u')
    if cur[1] ~= 'open' or untl > num(cur[2], 0) then
      redis.call('HSET', brk, 'st', 'open', 'u', fmt(untl))
      expire(brk, untl)
    end
  end
  if s.k and redis.call('HGET', brk, 'st') == 'half' then
    redis.call('DEL', brk)
  end
  -- Failures in a row at the upstream, across the fleet: enough of them
  -- open its circuit, as one process's breaker would.
  if s.r then redis.call('HDEL', brk, 'f') end
  if s.f and s.f > 0 and s.n and s.n > 0 then
    local f = redis.call('HINCRBY', brk, 'f', s.f)
    if f >= s.n and not redis.call('HGET', brk, 'st') then
      local untl = now + s.d
      redis.call('HSET', brk, 'st', 'open', 'u', fmt(untl))
      redis.call('HDEL', brk, 'f')
      expire(brk, untl)
    else
      expire(brk, now)
    end
  end
  expire(p, latest)
end

local nwin = tonumber(ARGV[4])
if nwin < 0 then return {0, 0, 0, 0, 0, 0, '', 0} end

-- Heartbeat: the fleet is the instances that reserved here recently.
local hbttl = tonumber(ARGV[7])
redis.call('ZADD', hb, now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', hb, '-inf', now - hbttl)
local fleet = redis.call('ZCARD', hb)
redis.call('PEXPIRE', hb, math.ceil(hbttl / 1000) + ttl)

local fields = {'cool', 'os'}
for i = 1, nwin do fields[2 + i] = 't:' .. ARGV[9 + (i - 1) * 4] end
local cur = redis.call('HMGET', p, unpack(fields))

local os = num(cur[2], 0)
local obs, age = '', 0
if os ~= tonumber(ARGV[6]) then
  local o = redis.call('HMGET', p, 'o', 'ot')
  if o[1] then obs, age = o[1], now - num(o[2], now) end
end

-- The breaker: while open, nothing is reserved; when its time is up, the
-- first reservation becomes the fleet's one probe.
local breaker = 0
local b = redis.call('HMGET', brk, 'st', 'u')
if b[1] then
  local untl = num(b[2], 0)
  if now < untl then return {math.min(untl - now, 1e15), 0, 0, 2, fleet, os, obs, age} end
  local probe = now + tonumber(ARGV[8])
  redis.call('HSET', brk, 'st', 'half', 'u', fmt(probe))
  expire(brk, probe)
  breaker = 1
end

-- GCRA per window, from the end of any cooldown: the request may go once
-- every window's theoretical arrival time, less its burst, has come. Then
-- every window is charged at that time, so that a window that had to wait
-- for another does not count the request as sent earlier than it is.
-- A window reserved for the first time starts from the newest reading of
-- it, when there is one: what the fleet sent before it reserved in the
-- window (its cold start) is in what the reading says remains, and the
-- rest of the limit is taken as used, given back at the window's rate.
local function first(id, r, bu)
  local o = redis.call('HMGET', p, 'o', 'ot')
  if not o[1] then return 0 end
  local ot = num(o[2], now)
  for _, w in ipairs(cjson.decode(o[1])) do
    local rem, reset, iss = w[3], w[4], w[5]
    if w[1] == id and rem >= 0 and iss >= 0 then
      local per = 1000000 / r
      local target = rem - math.max(num(redis.call('HGET', p, 'n:' .. id), 0) - iss, 0)
      local lim = w[2]
      if not lim or lim <= 0 then lim = bu end
      -- The reservations made before any window was known were sent
      -- too, though the reading may not count them all yet.
      local cold = math.min(num(redis.call('HGET', p, 'seq'), 0), lim)
      local tmin = ot + math.max(lim - target, cold) * per
      if reset >= 0 then tmin = math.min(tmin, ot + bu * per + reset) end
      return tmin
    end
  end
  return 0
end

local start = math.max(now, num(cur[1], 0))
local go = start
local tats = {}
for i = 1, nwin do
  local a = 8 + (i - 1) * 4
  local cost, r, bu = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), math.max(tonumber(ARGV[a + 4]), 1)
  if cost > 0 and r > 0 then
    tats[i] = num(cur[2 + i], nil) or first(ARGV[a + 1], r, bu)
    go = math.max(go, math.max(tats[i], start) + (cost - bu) * 1000000 / r)
  end
end
for i = 1, nwin do
  if tats[i] then
    local a = 8 + (i - 1) * 4
    tats[i] = math.max(tats[i], go) + tonumber(ARGV[a + 2]) * 1000000 / tonumber(ARGV[a + 3])
  end
end
local wait = math.min(go - now, 1e15) -- an integer reply, at most about 30 years
local maxwait = tonumber(ARGV[5])
if maxwait >= 0 and wait > maxwait then
  if breaker == 1 then redis.call('HSET', brk, 'u', fmt(now)) end -- hand the probe on
  return {wait, 1, 0, breaker, fleet, os, obs, age}
end

local seq = redis.call('HINCRBY', p, 'seq', 1)
local out = {wait, 0, seq, breaker, fleet, os, obs, age}
local set = {}
for i = 1, nwin do
  local a = 8 + (i - 1) * 4
  local id, cost = ARGV[a + 1], tonumber(ARGV[a + 2])
  if tats[i] then
    set[#set + 1] = 't:' .. id
    set[#set + 1] = fmt(tats[i])
    set[#set + 1] = 'r:' .. id
    set[#set + 1] = ARGV[a + 3]
    set[#set + 1] = 'b:' .. id
    set[#set + 1] = ARGV[a + 4]
    latest = math.max(latest, tats[i])
  end
  out[8 + i] = redis.call('HINCRBY', p, 'n:' .. id, fmt(math.max(cost, 0)))
end
if #set > 0 then redis.call('HSET', p, unpack(set)) end
expire(p, math.max(latest, start))
return out
