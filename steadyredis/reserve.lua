-- One partition's shared pacing state, changed atomically on Redis's clock.
--
-- KEYS[1]  hash: the partition's budget. seq (reservation counter);
--          per window ID: t:ID (theoretical arrival time, us), r:ID (rate,
--          units/s), b:ID (burst), n:ID (cumulative cost reserved);
--          cool (cooldown end, us); os, o, ot (newest observation: its seq,
--          its windows as JSON, when it was published, us); lg (the
--          latest send time granted, us).
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

-- A stored value that is not a finite number (another client's, or
-- stale) reads as the default: it can fail no arithmetic below.
local function num(v, d)
  local x = tonumber(v)
  if x == nil or x ~= x or x == math.huge or x == -math.huge then return d end
  return x
end
local function fmt(v) return string.format('%.0f', v) end
-- A key's TTL covers the latest time its state matters, plus the key TTL;
-- it is only ever lengthened, so that no write forgets early what an
-- earlier one stored (a long cooldown, a schedule far ahead).
local function expire(key, untilus)
  local ms = ttl
  if untilus > now then ms = ms + math.ceil((untilus - now) / 1000) end
  ms = math.min(ms, 1e12) -- at most about 30 years
  local cur = redis.call('PTTL', key)
  if cur == -1 or (cur >= 0 and cur < ms) then redis.call('PEXPIRE', key, ms) end
end

-- Validation, before anything is written (Redis does not roll a script
-- back, so an error half-way would leave half its writes): keys of the
-- wrong type, and a settlement that is not what steadyredis sends, are
-- refused with an error that names them; the store then paces this
-- partition alone locally (partfail.go).
local function kind(key, want)
  local ty = redis.call('TYPE', key)['ok']
  if ty ~= 'none' and ty ~= want then
    return redis.error_reply('STEADY wrongtype: ' .. key .. ' holds a ' .. ty .. ', want a ' .. want)
  end
  return nil
end
do
  local bad = kind(p, 'hash') or kind(hb, 'zset') or kind(brk, 'hash')
  if bad then return bad end
end
local function isnum(v) return type(v) == 'number' and v == v and v ~= math.huge and v ~= -math.huge end
local settle = nil
if ARGV[3] ~= '' then
  local ok, v = pcall(cjson.decode, ARGV[3])
  local good = ok and type(v) == 'table'
  if good and v.u ~= nil then
    good = type(v.u) == 'table'
    for _, u in ipairs(good and v.u or {}) do
      if type(u) ~= 'table' or type(u[1]) ~= 'string' or not isnum(u[2]) then good = false end
    end
  end
  if good and v.o ~= nil then
    good = type(v.o) == 'table' and isnum(v.o.s) and type(v.o.w) == 'table'
    for _, w in ipairs(good and v.o.w or {}) do
      if type(w) ~= 'table' or type(w[1]) ~= 'string' or not (isnum(w[2]) and isnum(w[3]) and isnum(w[4]) and isnum(w[5])) then
        good = false
      end
    end
  end
  for _, k in ipairs({'c', 't', 'f', 'n', 'd'}) do
    if good and v[k] ~= nil and not isnum(v[k]) then good = false end
  end
  if not good then return redis.error_reply('STEADY bad settlement: ' .. string.sub(ARGV[3], 1, 64)) end
  settle = v
end

local latest = now -- latest time any state written here matters

-- Evidence, not verdicts. What one process read is weighed against what
-- the fleet read before: a window whose limit is far below the limit the
-- fleet last accepted (a quarter or less), or whose reset is far beyond
-- the longest reset it accepted (four times and a second), is held back:
-- neither shared with the fleet nor let to cap its budget, until another
-- process reads the same (its vote, q:ID, names the first reader), or
-- until no other process has reserved here for a heartbeat TTL (a fleet
-- of one is what one process without a store would be). The process that
-- read it still applies it itself, as it would without a store; the next
-- true reading, its own or another's, replaces it. l:ID and z:ID are the
-- accepted limit and longest reset.
local function others()
  local hbttl = tonumber(ARGV[7])
  local n = redis.call('ZCOUNT', hb, now - hbttl, '+inf')
  local mine = tonumber(redis.call('ZSCORE', hb, ARGV[1]) or '-1') or -1
  if mine >= now - hbttl then n = n - 1 end
  return n
end
-- vote reports whether a contradicting value in field f is confirmed:
-- another instance voted the same way recently, or none else is here.
local function vote(f)
  local hbttl = tonumber(ARGV[7])
  local v = redis.call('HGET', p, f)
  if v then
    local who, at = string.match(v, '^(.*) (%d+)$')
    if who and who ~= ARGV[1] and now - (tonumber(at) or 0) <= hbttl then
      redis.call('HDEL', p, f)
      return true
    end
    if who == ARGV[1] and now - (tonumber(at) or 0) <= hbttl then return others() <= 0 end
  end
  redis.call('HSET', p, f, ARGV[1] .. ' ' .. fmt(now))
  return others() <= 0
end
local function evidence(ws)
  local kept = {}
  for _, w in ipairs(ws) do
    local id, lim, reset = w[1], w[2], w[4]
    local v = redis.call('HMGET', p, 'l:' .. id, 'z:' .. id)
    local l, z = num(v[1], 0), num(v[2], -1)
    local far = (lim > 0 and l > 0 and lim * 4 <= l) or (reset >= 0 and z >= 0 and reset > 4 * z + 1000000)
    if not far or vote('q:' .. id) then
      if not far then redis.call('HDEL', p, 'q:' .. id) end
      local set = {}
      if lim > 0 then set[#set + 1] = 'l:' .. id; set[#set + 1] = fmt(lim) end
      if reset >= 0 and (far or reset > z) then set[#set + 1] = 'z:' .. id; set[#set + 1] = fmt(reset) end
      if #set > 0 then redis.call('HSET', p, unpack(set)) end
      kept[#kept + 1] = w
    end
  end
  return kept
end

-- Settlement: what earlier requests showed, applied before reserving.
if settle then
  local s = settle
  if s.u then
    for _, u in ipairs(s.u) do
      local v = redis.call('HMGET', p, 'r:' .. u[1], 't:' .. u[1])
      local r, tat = num(v[1], 0), num(v[2], nil)
      if r > 0 and tat then
        tat = math.max(tat + u[2] * 1000000 / r, now)
        redis.call('HSET', p, 't:' .. u[1], fmt(tat), 'n:' .. u[1], fmt(num(redis.call('HGET', p, 'n:' .. u[1]), 0) + u[2]))
        latest = math.max(latest, tat)
      end
    end
  end
  if s.o and s.o.s > num(redis.call('HGET', p, 'os'), 0) then
    local ws = evidence(s.o.w)
    if #ws > 0 then
      redis.call('HSET', p, 'os', fmt(s.o.s), 'o', cjson.encode(ws), 'ot', fmt(now))
    end
    -- What the server says remains, less what the fleet reserved after
    -- the observed request, caps what the shared budget holds; a debt is
    -- repaid by the window's reset at the latest.
    for _, w in ipairs(ws) do
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
        else
          -- The schedule is further ahead than the server's count shows
          -- (a cost reserved that was never spent, such as an absurd
          -- max_tokens): it moves back, keeping a burst's margin for
          -- what is in flight and not counted yet, but never before the
          -- latest send already granted (lg), so that no part of the
          -- future is granted twice.
          local back = math.max(tmin, num(redis.call('HGET', p, 'lg'), 0)) + b * per
          if back < tat then redis.call('HSET', p, 't:' .. id, fmt(back)) end
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
    local f = num(redis.call('HGET', brk, 'f'), 0) + s.f
    redis.call('HSET', brk, 'f', fmt(f))
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
for i = 1, nwin do fields[2 + nwin + i] = 'r:' .. ARGV[9 + (i - 1) * 4] end
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
  local ok, ws = pcall(cjson.decode, o[1])
  if not ok or type(ws) ~= 'table' then return 0 end
  for _, w in ipairs(ws) do
    if type(w) ~= 'table' or not (isnum(w[2]) and isnum(w[3]) and isnum(w[4]) and isnum(w[5])) then return 0 end
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

-- A window's rate changes when a process reads a new limit. What the
-- fleet owes a window is units, not time: the debt ahead of now is
-- re-expressed at the new rate, so that the shared schedule moves back
-- as soon as the evidence does (a limit read far too low, then the true
-- one), and a process that reads a different limit from the others
-- waits by its own reading without moving theirs.
local function rescaled(tat, rold, rnew)
  if tat and rold and rold > 0 and rnew > 0 and rold ~= rnew and tat > now then
    return now + (tat - now) * rold / rnew
  end
  return tat
end

local start = math.max(now, num(cur[1], 0))
local go = start
local tats = {}
local rates = {}
for i = 1, nwin do
  local a = 8 + (i - 1) * 4
  local cost, r, bu = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), math.max(tonumber(ARGV[a + 4]), 1)
  local rold = num(cur[2 + nwin + i], nil)
  if r > 0 and rold and rold > 0 and r * 4 <= rold and not vote('v:' .. ARGV[a + 1]) then
    -- A rate far below the fleet's, read by this process alone (a limit
    -- read far too low, a reset far too long): the fleet's rate stands,
    -- for this request too, until another process reads the same.
    r = rold
  end
  rates[i] = r
  if cost > 0 and r > 0 then
    tats[i] = rescaled(num(cur[2 + i], nil), rold, r) or first(ARGV[a + 1], r, bu)
    go = math.max(go, math.max(tats[i], start) + (cost - bu) * 1000000 / r)
  end
end
for i = 1, nwin do
  if tats[i] then
    local a = 8 + (i - 1) * 4
    tats[i] = math.max(tats[i], go) + tonumber(ARGV[a + 2]) * 1000000 / rates[i]
  end
end
local wait = math.min(go - now, 1e15) -- an integer reply, at most about 30 years
local maxwait = tonumber(ARGV[5])
if maxwait >= 0 and wait > maxwait then
  if breaker == 1 then redis.call('HSET', brk, 'u', fmt(now)) end -- hand the probe on
  return {wait, 1, 0, breaker, fleet, os, obs, age}
end

local seq = num(redis.call('HGET', p, 'seq'), 0) + 1
redis.call('HSET', p, 'seq', fmt(seq), 'lg', fmt(go))
local out = {wait, 0, seq, breaker, fleet, os, obs, age}
local set = {}
for i = 1, nwin do
  local a = 8 + (i - 1) * 4
  local id, cost = ARGV[a + 1], tonumber(ARGV[a + 2])
  if tats[i] then
    set[#set + 1] = 't:' .. id
    set[#set + 1] = fmt(tats[i])
    set[#set + 1] = 'r:' .. id
    set[#set + 1] = string.format('%.17g', rates[i])
    set[#set + 1] = 'b:' .. id
    set[#set + 1] = ARGV[a + 4]
    latest = math.max(latest, tats[i])
  end
  out[8 + i] = num(redis.call('HGET', p, 'n:' .. id), 0) + math.max(cost, 0)
  redis.call('HSET', p, 'n:' .. id, fmt(out[8 + i]))
end
if #set > 0 then redis.call('HSET', p, unpack(set)) end
expire(p, math.max(latest, start))
return out
