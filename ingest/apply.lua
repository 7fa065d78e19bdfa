-- apply.lua: apply a batch of decoded events of one shard and acknowledge
-- them, atomically. An entry is applied only if this script's XACK removed
-- it from the pending list, so an entry applied by one consumer is never
-- applied again by another that claimed or re-read it: apply-and-ack is one
-- step, and every event is counted exactly once.
--
-- KEYS (all in the shard's hash slot):
--   1 stream             the shard's event stream
--   2 lease              the shard's lease; the script refuses to run unless
--                        ARGV[2] holds it (fencing a consumer that lost it)
--   3 seen (current)     producer ids applied in this dedupe bucket (set)
--   4 seen (previous)    producer ids applied in the previous bucket (set)
--   5 counters           this minute's counters hash
--   6 counter index      sorted set of minutes with counters
--   7 active-user index  sorted set of "day|app" with a HyperLogLog
--   8 dead letters       the shard's dead-letter stream
--   9.. per-event keys, in the order of the events, as listed below.
--
-- ARGV:
--   1 group, 2 consumer, 3 now (unix ms), 4 minute (unix minutes),
--   5 seen TTL (s), 6 unread TTL (s), 7 presence TTL (ms), 8 recent cap,
--   9 counters TTL (s), 10 dead-letter MAXLEN, 11 want episodes (0/1),
--   12 active-user TTL (s), 13 day ("20060102"), 14 day start (unix s),
--   15.. events. Each event starts with an op and its entry id:
--   M entry id app conv msg sender preview ts nrecipients {user mentioned}...
--       keys: conv, recent, sender episode, sender badge, dau,
--             then per recipient: episode, badge
--   R entry id app conv user upto        keys: episode, badge, recent, dau
--   P entry id app user status device    keys: presence, dau
--   C entry id app metric                (counted only: device, prefs)
--   X entry reason detail app deliveries payload   (dead letter)
--
-- Returns {applied, duplicates, already_acked, dead, episode records...}
-- The episode hash holds n (unread count), id (the entry id of the message
-- that opened it), since (that message's ts), app, m ("1" once the user was
-- mentioned) and last (the id of the last message to the user).
--
-- where an episode record is "o", user, conv, episode id, mentioned (an
-- episode opened) or "c", user, conv, episode id, app (an episode closed).
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
if redis.call('GET', KEYS[2]) ~= consumer then
  return redis.error_reply('NUDGELEASE lease of ' .. stream .. ' not held by ' .. consumer)
end

-- Entries are applied in stream order. A consumer that took the shard over
-- while the one that lost it was still reading may find an older entry
-- pending for that one (read, then fenced off by the lease above): it
-- refuses the batch and claims the pending entries in order first. The
-- batch's entries come in id order: ARGV[16] is the first.
local function idLess(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
if ARGV[16] then
  local oldest = redis.pcall('XPENDING', stream, group, '-', '+', 1)
  if type(oldest) == 'table' and oldest[1] and idLess(oldest[1][1], ARGV[16]) then
    return redis.error_reply('NUDGEORDER entry ' .. oldest[1][1] .. ' of ' .. oldest[1][2] ..
      ' is pending before ' .. ARGV[16])
  end
end

local now = tonumber(ARGV[3])
local seenTTL, unreadTTL = tonumber(ARGV[5]), tonumber(ARGV[6])
local presenceTTL, recentCap = tonumber(ARGV[7]), tonumber(ARGV[8])
local wantEpisodes = ARGV[11] == '1'
local dauTTL, day, dayStart = tonumber(ARGV[12]), ARGV[13], ARGV[14]

-- Counts and episode records of the event being applied are pending until
-- it is applied whole (see the loop at the end).
-- They are flat arrays with a length, reused from event to event.
local counts = {}
local pending, np = {}, 0 -- field, n, field, n, ...
local pendingEps, ne = {}, 0 -- kind, user, conv, id, extra, ...
local pendingApplied, pendingDup = 0, 0
local fields = {} -- app -> metric -> "metric|app||"
local function count(metric, app, n)
  local byApp = fields[app]
  if not byApp then
    byApp = {}
    fields[app] = byApp
  end
  local f = byApp[metric]
  if not f then
    f = metric .. '|' .. app .. '||'
    byApp[metric] = f
  end
  pending[np + 1], pending[np + 2] = f, n
  np = np + 2
end

-- Active users are added to their HyperLogLog once per key and batch, at
-- the end. Adding a user twice changes nothing, so a failed event's users
-- need no undo.
local dau, dauApp = {}, {}
local function active(key, app, user)
  local users = dau[key]
  if not users then
    users = {}
    dau[key], dauApp[key] = users, app
  end
  users[#users + 1] = user
end

local out = {0, 0, 0, 0}
local function episode(kind, user, conv, id, extra)
  if wantEpisodes then
    pendingEps[ne + 1], pendingEps[ne + 2], pendingEps[ne + 3], pendingEps[ne + 4], pendingEps[ne + 5] = kind, user, conv, id, extra
    ne = ne + 5
  end
end

-- closeEpisode ends user's episode in conv, if one is open: it removes the
-- conversation's count from the badge and deletes the episode. The badge
-- field exists whenever the episode does (both are made together, and the
-- badge hash lives at least as long), so the common case costs one HDEL.
local function closeEpisode(epKey, badgeKey, user, conv, app)
  if redis.call('HDEL', badgeKey, conv) == 0 then
    return
  end
  local st = redis.call('HMGET', epKey, 'id', 'app')
  redis.call('DEL', epKey)
  if st[1] then
    count('episodes_closed', app, 1)
    episode('c', user, conv, st[1], st[2] or app)
  end
end

-- firstApply acknowledges the entry and checks the producer id: it returns
-- true when the event is to be applied now.
local function firstApply(entry, id, app)
  if redis.call('XACK', stream, group, entry) == 0 then
    out[3] = out[3] + 1 -- another consumer applied it already
    return false
  end
  if redis.call('SADD', KEYS[3], id) == 0 or redis.call('SISMEMBER', KEYS[4], id) == 1 then
    count('duplicates', app, 1)
    pendingDup = 1
    return false
  end
  count('events_applied', app, 1)
  pendingApplied = 1
  return true
end

-- Each op applies one event; a and k are its first ARGV and KEYS index.
local ops = {}
ops.M = function(a, k)
  local entry, id, app, conv, msg = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local sender, preview, ts, nr = ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], tonumber(ARGV[a + 9])
  local convKey, recentKey, senderEp, senderBadge, dauKey = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  if firstApply(entry, id, app) then
    -- TTLs are set when a key is made, not on every write: a key lives
    -- UnreadTTL from its creation, then is made again by the next write.
    if redis.call('HSET', convKey, 'msg', msg, 'sender', sender, 'preview', preview, 'ts', ts) > 0 then
      redis.call('EXPIRE', convKey, unreadTTL)
    end
    local len = redis.call('LPUSH', recentKey, msg)
    if len == 1 then
      redis.call('EXPIRE', recentKey, unreadTTL)
    elseif len > 2 * recentCap then
      redis.call('LTRIM', recentKey, 0, recentCap - 1)
    end
    -- Writing to a conversation means having read it.
    closeEpisode(senderEp, senderBadge, sender, conv, app)
    active(dauKey, app, sender)
    local mentions = 0
    for i = 0, nr - 1 do
      local user, mentioned = ARGV[a + 10 + 2 * i], ARGV[a + 11 + 2 * i]
      local ep, badge = KEYS[k + 5 + 2 * i], KEYS[k + 6 + 2 * i]
      if redis.call('HINCRBY', ep, 'n', 1) == 1 then
        redis.call('HSET', ep, 'id', entry, 'since', ts, 'app', app, 'm', mentioned, 'last', msg)
        redis.call('EXPIRE', ep, unreadTTL)
        count('episodes_opened', app, 1)
        episode('o', user, conv, entry, mentioned)
      elseif mentioned == '1' then
        redis.call('HSET', ep, 'm', '1', 'last', msg)
      else
        redis.call('HSET', ep, 'last', msg)
      end
      if mentioned == '1' then mentions = mentions + 1 end
      if redis.call('HINCRBY', badge, conv, 1) == 1 then
        redis.call('EXPIRE', badge, unreadTTL)
      end
    end
    count('messages_sent', app, 1)
    count('recipients', app, nr)
    if mentions > 0 then count('mentions', app, mentions) end
  end
end
ops.R = function(a, k)
  local entry, id, app, conv, user, upto = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
  local ep, badge, recentKey, dauKey = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  if firstApply(entry, id, app) then
    count('reads', app, 1)
    active(dauKey, app, user)
    local full = true
    if upto ~= '' then
      local st = redis.call('HMGET', ep, 'last', 'n')
      local n = tonumber(st[2])
      if n and st[1] ~= upto then
        -- Read up to an older message: the messages after it stay unread.
        local pos = redis.call('LPOS', recentKey, upto)
        if pos == false and redis.call('LLEN', recentKey) >= recentCap then
          full = false -- older than we remember: the count stands
        elseif pos and pos > 0 then
          n = math.min(n, pos)
          redis.call('HSET', ep, 'n', n)
          redis.call('HSET', badge, conv, n)
          full = false
        end
      end
    end
    if full then closeEpisode(ep, badge, user, conv, app) end
  end
end
ops.P = function(a, k)
  local entry, id, app, user, status, device = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
  local pkey, dauKey = KEYS[k], KEYS[k + 1]
  if firstApply(entry, id, app) then
    count('presence_events', app, 1)
    redis.call('ZREMRANGEBYSCORE', pkey, '-inf', now)
    if status == 'offline' then
      redis.call('ZREM', pkey, device)
    else
      redis.call('ZADD', pkey, now + presenceTTL, device)
      active(dauKey, app, user)
    end
    if redis.call('ZCARD', pkey) == 0 then
      redis.call('DEL', pkey)
    else
      redis.call('PEXPIRE', pkey, presenceTTL)
    end
  end
end
ops.C = function(a, k)
  local entry, id, app, metric = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  if firstApply(entry, id, app) then count(metric, app, 1) end
end

-- deadLetter acknowledges an entry and copies it to the dead-letter stream.
local function deadLetter(entry, reason, detail, app, deliveries, payload)
  if redis.call('XACK', stream, group, entry) == 0 then
    out[3] = out[3] + 1
    return
  end
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[10], '*',
    'reason', reason, 'detail', detail, 'stream', stream, 'entry', entry,
    'deliveries', deliveries, 'consumer', consumer, 'at', ARGV[3], 'payload', payload)
  out[4] = out[4] + 1
  local f = 'dead_lettered|' .. app .. '||' .. reason
  counts[f] = (counts[f] or 0) + 1
end

-- ARGV and KEYS taken by each op, before its recipients.
local size = {M = {10, 5}, R = {7, 4}, P = {7, 2}, C = {5, 0}}

local a, k = 15, 9
while a <= #ARGV do
  local op = ARGV[a]
  if op == 'X' then
    deadLetter(ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6])
    a = a + 7
  elseif ops[op] then
    local na, nk = size[op][1], size[op][2]
    if op == 'M' then
      local nr = tonumber(ARGV[a + 9])
      na, nk = na + 2 * nr, nk + 2 * nr
    end
    np, ne, pendingApplied, pendingDup = 0, 0, 0, 0
    -- A runtime error (a key of the wrong type, say) would leave the batch
    -- half applied, with no rollback. Each event runs under pcall instead:
    -- one that fails is already acknowledged, so it goes to the dead-letter
    -- stream with the error, and its counts are dropped.
    local ok, err = pcall(ops[op], a, k)
    if ok then
      for i = 1, np, 2 do
        local f = pending[i]
        counts[f] = (counts[f] or 0) + pending[i + 1]
      end
      out[1], out[2] = out[1] + pendingApplied, out[2] + pendingDup
      for i = 1, ne do out[#out + 1] = pendingEps[i] end
    else
      local entry = ARGV[a + 1]
      local found = redis.call('XRANGE', stream, entry, entry)
      local payload = ''
      if found[1] then
        local fields = found[1][2]
        for i = 1, #fields, 2 do
          if fields[i] == 'event' then payload = fields[i + 1] end
        end
      end
      redis.call('XACK', stream, group, entry) -- in case the error came first
      redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[10], '*',
        'reason', 'apply_failed', 'detail', tostring(err), 'stream', stream, 'entry', entry,
        'deliveries', '0', 'consumer', consumer, 'at', ARGV[3], 'payload', payload)
      out[4] = out[4] + 1
      local f = 'dead_lettered|' .. ARGV[a + 3] .. '||apply_failed'
      counts[f] = (counts[f] or 0) + 1
    end
    a, k = a + na, k + nk
  else
    return redis.error_reply('NUDGEBADOP unknown op ' .. tostring(op))
  end
end

if out[1] > 0 then redis.call('EXPIRE', KEYS[3], seenTTL) end
for key, users in pairs(dau) do
  redis.call('PFADD', key, unpack(users))
  redis.call('EXPIRE', key, dauTTL)
  redis.call('ZADD', KEYS[7], dayStart, day .. '|' .. dauApp[key])
end
if next(dau) then redis.call('EXPIRE', KEYS[7], dauTTL) end
local any = false
for f, n in pairs(counts) do
  redis.call('HINCRBY', KEYS[5], f, n)
  any = true
end
if any then
  redis.call('EXPIRE', KEYS[5], ARGV[9])
  redis.call('ZADD', KEYS[6], 'NX', ARGV[4], ARGV[4])
  redis.call('EXPIRE', KEYS[6], ARGV[9])
end
return out
