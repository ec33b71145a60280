-- One partition's shared pacing state, changed atomically on Redis's clock.
--
-- KEYS[1]  hash: the partition's budget. seq (reservation counter);
--          per window ID: t:ID (theoretical arrival time, us), r:ID (rate,
--          units/s), b:ID (burst), n:ID (cumulative cost reserved);
--          cool (cooldown end, us); os, o, ot (newest observation: its seq,
--          its windows as JSON, when it was published, us); lg (the
--          latest send time granted, us); gr:ID (set once a process
--          found the window to refill gradually: it keeps no epochs).
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
-- Options after the windows, in name, value pairs: cold (the fleet's
-- cold-start bound, for a reservation without windows), now (a test's
-- clock, us, read in place of Redis's) and kN (what the request keeps of
-- its Nth window for the requests after it: a batch's reserve; see the
-- GCRA below).
local opt = {}
do
  local i = 9 + 4 * math.max(tonumber(ARGV[4]), 0)
  while ARGV[i + 1] do
    opt[ARGV[i]] = tonumber(ARGV[i + 1])
    i = i + 2
  end
end
local now = opt.now
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
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
  -- Fleet epochs and cold starts (epoch.go, cold.go).
  for _, k in ipairs({'e', 'v'}) do
    if good and v[k] ~= nil then
      good = type(v[k]) == 'table'
      for _, w in ipairs(good and v[k] or {}) do
        if type(w) ~= 'table' or type(w[1]) ~= 'string' then good = false end
        for j = 2, (k == 'e' and 6 or 3) do
          if good and not isnum(w[j]) then good = false end
        end
      end
    end
  end
  for _, k in ipairs({'c', 't', 'f', 'n', 'd', 'q'}) do
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

-- Fleet epochs. A window that is whole again only at its reset (a fixed
-- window, or one whose kind is not known yet) is counted as the server
-- counts it, in epochs: until an epoch's end the fleet may send, at once,
-- what the newest reading says remains less what the fleet reserved
-- after the observed request, and not a unit more, however fast the
-- window's rate would refill it; a request that does not fit asks again
-- at the epoch's end. An epoch that ends before its next reading is
-- followed by one of the window's burst (its quota less headroom), the
-- burst / rate long. Per window: e:ID the epoch's end (us), c:ID the most
-- n:ID may reach before it, pv:ID set while the epoch is provisional (no
-- reading yet).
local epochTol = 400000 -- readings of one epoch end within this (us)
-- The fleet's share of a key that others use too (issue 18: a store
-- must not hide what the headers say). Two fleets on two prefixes, or a
-- fleet beside a process without steady, each read what remains falling
-- faster than the fleet sends. Over one epoch, from the first moment of
-- it the fleet read (its base) to the latest reading, the server counted
-- fx:ID - rr + 1 units (from the base's first counted request to the
-- latest's last), of which the fleet's were at most what it issued from
-- the base's start to the latest moment's end; the rest are others'. The
-- share (fs:ID) falls at once to what the fleet took of that, and rises
-- back by a quarter of the gap when a moment's readings are all in
-- (the next moment's first arrives) and showed fewer others, while much
-- remains (near empty, a window hides what others take). It bounds what
-- the fleet sends at once of what remains, and of the burst at each
-- epoch's start, as one process alone paces its share. Readings of a
-- limit far below the fleet's accepted one (see evidence) do not move it;
-- one reading bounds the share no lower than a sixteenth, and the next
-- truthful ones undo it. fb:ID, fe:ID, fx:ID and fo:ID are the base
-- moment's start, epoch end, most remaining read, and the units it issued
-- that n:ID does not count (the cold reservations').
--
-- mb is the reading's moment base (-1: the cold reservations), rr and rx
-- the least and most remaining its moment read so far, and prr, when the
-- reading begins a new moment, the least the moment before it read.
local minShare = 1 / 16
local function fleetShare(id, lim, e, mb, rr, rx, prr)
  local v = redis.call('HMGET', p, 'fs:' .. id, 'l:' .. id, 'fb:' .. id, 'fe:' .. id, 'fx:' .. id, 'fo:' .. id,
    'mb:' .. id, 'n:' .. id, 'mp:' .. id, 'me:' .. id, 'kc')
  local s0 = num(v[1], 1)
  local s = s0
  local l = num(v[2], 0)
  if lim <= 0 or (l > 0 and lim * 4 <= l) then return s end
  -- What the fleet issued in the reading's moment: all of it may be in
  -- what the server counted.
  local base, off, total = mb, 0, nil
  if mb < 0 then
    base, off, total = 0, num(v[11], 0), 0
  elseif mb == num(v[7], nil) then
    total = num(v[8], 0) - mb
  elseif mb == num(v[9], nil) then
    total = num(v[10], 0) - mb
  else
    total = num(v[8], 0) - mb
  end
  local fb, fe, fx, fo = num(v[3], nil), num(v[4], nil), num(v[5], nil), num(v[6], 0)
  if not fb or not fe or not fx or math.abs(e - fe) > epochTol or base < fb then
    -- The epoch's first moment read.
    fb, fx, fo = base, rx, off
    redis.call('HSET', p, 'fb:' .. id, fmt(fb), 'fe:' .. id, fmt(e), 'fx:' .. id, fmt(fx), 'fo:' .. id, fmt(fo))
  elseif base == fb then
    if rx > fx then
      fx = rx
      redis.call('HSET', p, 'fx:' .. id, fmt(fx))
    end
  elseif prr and prr * 4 >= lim then
    -- The moment before this one is all in: what it showed may raise the
    -- share.
    local own = base - fb + fo
    local span = fx - prr + 1
    local others = span - own
    if own + math.max(others, 0) >= 4 then
      local ratio = 1
      if others > 1 + 0.02 * span then ratio = own / (own + others) end
      if ratio > s then
        s = math.min(s + (ratio - s) / 4, 1)
        if s > 0.95 then s = 1 end
      end
    end
  end
  local own = base - fb + fo + total
  local span = fx - rr + 1
  local others = span - own
  if own + math.max(others, 0) >= 4 and others > 1 + 0.02 * span then
    s = math.min(s, math.max(own / (own + others), minShare))
  end
  if s ~= s0 then
    redis.call('HSET', p, 'fs:' .. id, string.format('%.6g', s))
  end
  return s
end

-- epochObserve applies one response's reading: rem remained after its
-- request (of cost cost, issued count iss: its moment's base plus its
-- cost; 0 for a cold reservation), and the epoch ends in reset us. The
-- readings of one moment (rm:ID its base) are taken together: rk:ID the
-- units they answered, rr:ID the least remaining, which was counted
-- last; a later moment's reading starts again.
local function epochObserve(id, lim, rem, reset, iss, cost)
  -- A window a process found to refill gradually (gr:ID) keeps no
  -- epochs, whatever the processes that do not know it yet read.
  if redis.call('HEXISTS', p, 'gr:' .. id) == 1 then return end
  -- A reset far beyond the longest the fleet accepted (see evidence) is
  -- not believed here either.
  local z = num(redis.call('HGET', p, 'z:' .. id), -1)
  if z >= 0 and reset > 4 * z + 1000000 then return end
  local e = now + reset
  local v = redis.call('HMGET', p, 'e:' .. id, 'pv:' .. id, 'rm:' .. id, 'rk:' .. id, 'rr:' .. id)
  local oe = num(v[1], 0)
  if v[1] and not v[2] and e < oe - epochTol then
    return -- an older epoch's reading
  end
  local mb = iss - cost
  if iss == 0 then mb = -1 end -- the cold reservations, before any window
  local rm, rk, rr = num(v[3], nil), num(v[4], 0), num(v[5], 0)
  if rm and mb < rm then return end -- an older moment: a newer one tells more
  local rx = num(redis.call('HGET', p, 'rx:' .. id), rem)
  local prr = nil
  if rm and mb == rm then
    rk, rr, rx = rk + cost, math.min(rr, rem), math.max(rx, rem)
  else
    if rm then prr = rr end
    rm, rk, rr, rx = mb, cost, rem, rem
  end
  local s = fleetShare(id, lim, e, rm, rr, rx, prr)
  local c = math.max(rm, 0) + rk + math.floor(s * rr)
  if mb < 0 then
    -- Of the cold reservations, those not answered yet may not be
    -- counted. They carry no cost (no window was known when they
    -- went), so their readings are counted here (ka:ID), not in rk.
    local ka = redis.call('HINCRBY', p, 'ka:' .. id, 1)
    c = math.floor(s * rr) - math.max(num(redis.call('HGET', p, 'kc'), 1) - ka, 0)
  end
  redis.call('HSET', p, 'e:' .. id, fmt(e), 'c:' .. id, fmt(c), 'rm:' .. id, fmt(rm), 'rk:' .. id, fmt(rk), 'rr:' .. id, fmt(rr), 'rx:' .. id, fmt(rx))
  if v[2] then redis.call('HDEL', p, 'pv:' .. id) end
  latest = math.max(latest, e)
end
-- epochTurn plans cost in window id (burst bu, rate r): the time it may
-- go, or nil, nil and the time to ask again (0: soon); nil when the
-- window keeps no epochs. A request that keeps keep units goes only while
-- that many more remain of the epoch (not in a provisional one, whose one
-- request must go for a reading to come).
local function epochTurn(id, cost, bu, r, start, resets, keep)
  local v = redis.call('HMGET', p, 'e:' .. id, 'c:' .. id, 'n:' .. id, 'pv:' .. id)
  if not resets and (not v[1] or now >= num(v[1], 0)) then
    -- A reservation that paces the window by its rate (its process
    -- found that it refills gradually, or knows no reset) is held to an
    -- epoch while it lasts, but does not begin the next: its burst is
    -- not an epoch's, and the epoch it began would hold only the units
    -- the last readings answered, which the fleet's requests of other
    -- bursts outgrow for good (it stalled so).
    return nil
  end
  local len = math.max(bu * 1000000 / r, 1000)
  local e, c, n = num(v[1], 0), num(v[2], 0), num(v[3], 0)
  if not v[1] then
    -- A window the fleet paces by its rate already (a process found
    -- that it refills gradually) stays so.
    if redis.call('HEXISTS', p, 'r:' .. id) == 1 then return nil end
    -- The reserving process holds the window to its reset, but the
    -- fleet has no reading of it (Redis restarted empty, or the reading
    -- is on its way): one request goes, the others ask again, until a
    -- reading comes.
    e, c = now + len, n + cost
    redis.call('HSET', p, 'e:' .. id, fmt(e), 'c:' .. id, fmt(c), 'pv:' .. id, 1)
    v[4] = '1'
  end
  if v[4] and n + cost > c then return nil, nil, 0 end
  if now >= e then
    -- The epoch ended before its next reading: the next one holds the
    -- burst, less what is still unanswered (sent before the reset, it
    -- may be counted after it).
    local k = math.floor((now - e) / len) + 1
    local w = redis.call('HMGET', p, 'rm:' .. id, 'rk:' .. id)
    local answered = 0
    if num(w[1], -1) >= 0 then answered = num(w[1], 0) + num(w[2], 0) end
    local s = num(redis.call('HGET', p, 'fs:' .. id), 1)
    e, c = e + k * len, n + math.max(math.floor(s * bu), 1) - math.max(n - answered, 0)
    redis.call('HSET', p, 'e:' .. id, fmt(e), 'c:' .. id, fmt(c))
    latest = math.max(latest, e)
  end
  if v[4] then keep = 0 end
  if n + cost + keep <= c then return start end
  -- A request that keeps (a batch, which asks only for a turn it can
  -- take now) asks again at the window's next unit rather than at the
  -- epoch's end: a newer reading may show more remaining by then (a
  -- window read as resetting that gives back gradually).
  if keep > 0 then return nil, nil, math.min(e, now + cost * 1000000 / r) end
  return nil, nil, e
end
local function resetWindow(w)
  return w[4] >= 0 and w[7] ~= 1
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
      if w[7] == 1 then
        -- It refills gradually, as a process found: paced by its rate
        -- from now on, whatever other processes believe yet.
        redis.call('HDEL', p, 'e:' .. id, 'c:' .. id, 'pv:' .. id)
        redis.call('HSET', p, 'gr:' .. id, 1)
      end
      if rem >= 0 and iss >= 0 and r > 0 and not resetWindow(w) then
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
  if s.v then
    -- What granted reservations count changed (given back, or charged
    -- their actual cost): the moments issued after them move with it.
    for _, d in ipairs(s.v) do
      local v = redis.call('HMGET', p, 'rm:' .. d[1], 'mb:' .. d[1], 'c:' .. d[1])
      if v[1] and d[2] <= tonumber(v[1]) then
        redis.call('HSET', p, 'rm:' .. d[1], fmt(tonumber(v[1]) + d[3]), 'c:' .. d[1], fmt(num(v[3], 0) + d[3]))
      end
      if v[2] and d[2] <= tonumber(v[2]) then
        redis.call('HSET', p, 'mb:' .. d[1], fmt(tonumber(v[2]) + d[3]))
      end
      -- The fleet's share compares counts of the same kind (fleetShare).
      for _, f in ipairs({'mp:', 'me:', 'fb:'}) do
        local x = num(redis.call('HGET', p, f .. d[1]), nil)
        if x and d[2] <= x then redis.call('HSET', p, f .. d[1], fmt(x + d[3])) end
      end
    end
  end
  if s.e then
    for _, w in ipairs(s.e) do
      epochObserve(w[1], w[2], w[3], w[4], w[5], w[6])
    end
  end
  if s.q and s.q > 0 then
    -- Cold reservations settled: others may go.
    if redis.call('HINCRBY', p, 'kf', -s.q) < 0 then redis.call('HSET', p, 'kf', 0) end
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

-- Fleet cold start: until the first reading of the partition is shared,
-- the whole fleet has at most opt.cold reservations without windows
-- unanswered (a reservation older than coldWait counts no more); the
-- others ask again (reply refused 2).
local coldWait = 30000000
if opt.cold and opt.cold > 0 and nwin == 0 and os == 0 then
  local v = redis.call('HMGET', p, 'kf', 'kt')
  local kf, kt = num(v[1], 0), num(v[2], 0)
  if kf >= opt.cold and now - kt < coldWait then
    if breaker == 1 then redis.call('HSET', brk, 'u', fmt(now)) end -- hand the probe on
    return {0, 2, 0, breaker, fleet, os, obs, age}
  end
  if kf >= opt.cold then kf = 0 end
  redis.call('HSET', p, 'kf', kf + 1, 'kt', fmt(now))
  redis.call('HINCRBY', p, 'kc', 1)
end

-- GCRA per window, from the end of any cooldown: the request may go once
-- every window's theoretical arrival time, less its burst, has come. Then
-- every window is charged at that time, so that a window that had to wait
-- for another does not count the request as sent earlier than it is.
-- A request that keeps units of a window (kN: a batch leaving a reserve
-- for interactive requests, fleet-wide) uses of its burst only what
-- exceeds them, and in a window counted in epochs goes at the window's
-- rate too, never in a burst: the fleet's batches are sent evenly through
-- each epoch, rather than take it at its start and leave the requests
-- that come later to wait for its end.
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
local tats, againAt = {}, nil
local rates = {}
local bursts = {} -- whether the window's burst is stored as its rate's (b:ID)
for i = 1, nwin do
  local a = 8 + (i - 1) * 4
  local cost, r, bu = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3]), math.max(math.abs(tonumber(ARGV[a + 4])), 1)
  local resets = tonumber(ARGV[a + 4]) < 0 -- a negative burst: the window resets (see epochTurn)
  -- Once the fleet found that the window refills gradually, an epoch's
  -- size (a process that does not know it yet) is no burst of its rate:
  -- the settlements that move the schedule by a reading count in the
  -- burst of those that know it.
  bursts[i] = not resets or redis.call('HEXISTS', p, 'gr:' .. ARGV[a + 1]) == 0
  local rold = num(cur[2 + nwin + i], nil)
  if r > 0 and rold and rold > 0 and r * 4 <= rold and not vote('v:' .. ARGV[a + 1]) then
    -- A rate far below the fleet's, read by this process alone (a limit
    -- read far too low, a reset far too long): the fleet's rate stands,
    -- for this request too, until another process reads the same.
    r = rold
  end
  rates[i] = r
  if cost > 0 and r > 0 then
    local keep = math.max(opt['k' .. i] or 0, 0)
    tats[i] = rescaled(num(cur[2 + i], nil), rold, r) or first(ARGV[a + 1], r, bu)
    local paced = math.max(tats[i], start)
    local g = paced + (cost - math.max(bu - keep, math.min(cost, bu))) * 1000000 / r
    if resets and keep > 0 then g = paced end -- an epoch's burst is not for it
    local eg, _, again = epochTurn(ARGV[a + 1], cost, bu, r, start, resets, keep)
    if again then
      againAt = math.max(againAt or 0, again)
    elseif eg then
      g = eg -- the epoch decides, not the rate
      if keep > 0 then g = math.max(eg, paced) end -- and the rate, for a request that keeps
    end
    go = math.max(go, g)
  end
end
if againAt then
  if breaker == 1 then redis.call('HSET', brk, 'u', fmt(now)) end -- hand the probe on
  return {math.min(againAt - now, 1e15), 2, 0, breaker, fleet, os, obs, age}
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

-- Requests of the fleet that go at one moment (within sameMoment) reach
-- the server in any order: a request's issued count, which a reading of
-- its response compares with what remains, is the count before the first
-- of its moment, and its own cost. m:ID is the latest moment's go time,
-- mb:ID the count before it.
local sameMoment = 50000
local function moment(id, at, n, cost)
  local v = redis.call('HMGET', p, 'm:' .. id, 'mb:' .. id)
  local m = num(v[1], nil)
  if m and at >= m and at - m <= sameMoment then return num(v[2], 0) + cost end
  if v[2] then
    redis.call('HSET', p, 'mp:' .. id, v[2], 'me:' .. id, fmt(n - cost))
  end
  redis.call('HSET', p, 'm:' .. id, fmt(at), 'mb:' .. id, fmt(n - cost))
  return n
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
    if bursts[i] then
      set[#set + 1] = 'b:' .. id
      set[#set + 1] = fmt(math.abs(tonumber(ARGV[a + 4])))
    end
    latest = math.max(latest, tats[i])
  end
  local nv = num(redis.call('HGET', p, 'n:' .. id), 0) + math.max(cost, 0)
  redis.call('HSET', p, 'n:' .. id, fmt(nv))
  out[8 + i] = moment(id, go, nv, math.max(cost, 0))
end
if #set > 0 then redis.call('HSET', p, unpack(set)) end
expire(p, math.max(latest, start))
return out
