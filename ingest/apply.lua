#!lua
-- apply.lua: apply a batch of decoded events of one shard and acknowledge
-- them, atomically. An entry is applied only if it is pending at the start
-- of the script (the shard's lease makes this consumer its only applier),
-- and every entry applied is acknowledged by the same script: an entry
-- applied by one consumer is never applied again by another that claimed
-- or re-read it, and every event is counted exactly once.
--
-- The "#!lua" line above makes Redis refuse the whole script when it is
-- out of memory (maxmemory with noeviction), before any write: a batch is
-- applied whole or not at all, and ingest retries it.
--
-- A message with more recipients than one script should touch comes in
-- chunks (op K): each chunk applies its recipients once, a counter key
-- remembers how far the message got, and the last chunk acknowledges it.
-- No script runs longer than its chunk.
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
--   9 outbox             episodes opened and closed, for the reminder relay
--  10 registry outbox    device and preference events, for the registry relay
--  11.. per-event keys, in the order of the events, as listed below.
--
-- ARGV:
--   1 group, 2 consumer, 3 now (unix ms), 4 minute (unix minutes),
--   5 seen TTL (s), 6 unread TTL (s), 7 presence TTL (ms), 8 recent cap,
--   9 counters TTL (s), 10 dead-letter MAXLEN, 11 want episodes (0/1),
--   12 active-user TTL (s), 13 day ("20060102"), 14 day start (unix s),
--   15 want registry events (0/1), 16 chunk TTL (s), 17 conversion window
--   (ms), 18 opened-mark TTL (s),
--   19.. events. Each event starts with an op and its entry id:
--   M entry id app conv msg sender preview title ts nrecipients {user mentioned}...
--       keys: conv, recent, sender episode, sender badge, dau,
--             then per recipient: episode, badge
--   K entry id app conv msg sender preview title ts ntotal chunk nchunks nrecipients {user mentioned}...
--       (chunk of nchunks, counted from 0, of a message of ntotal recipients)
--       keys: conv, recent, sender episode, sender badge, dau, chunk progress,
--             then per recipient of the chunk: episode, badge
--   R entry id app conv user upto        keys: episode, badge, recent, dau
--   P entry id app user status device    keys: presence, dau
--   C entry id app metric payload        (counted; payload to the registry outbox)
--   O entry id app platform stage        keys: opened mark (a reminder opened: counted once per mark)
--   X entry reason detail app deliveries payload   (dead letter)
--
-- Returns {applied, duplicates, already_acked, dead, outbox entries, registry entries}.
--
-- The episode hash holds id (the entry id of the message that opened it),
-- since (that message's ts), app, m ("1" once the user was mentioned), last
-- (the id of the last message to the user) and, once the worker pushed a
-- reminder of it, rs ("stage|unix ms|platform" of each stage pushed, comma
-- separated, the time Redis's): a read published within the conversion
-- window after a push converts the last stage pushed before it (convert).
-- Its unread count is the conversation's field of the user's badge hash,
-- kept in one place: an episode exists exactly while that field does.
--
-- An outbox entry has one field, "r": lines of
--   O|conv|episode id|app|ts|applied|user|mentioned|user|mentioned...  episodes opened by one message
-- (ts: the message's; applied: now, ARGV[3])
--   C|user|conv|episode id|app                                 an episode closed
-- in the order they happened. Ids never hold "|" (event.validID).
--
-- The metric names it counts (the m* locals), the dead-letter reason it
-- writes (reasonApplyFailed) and the read-delay buckets (readBuckets) are
-- defined in Go: ingest/names.go puts them in a prelude before this file,
-- from package counters. The script spells none of them itself.
local stream, group, consumer = KEYS[1], ARGV[1], ARGV[2]
if redis.call('GET', KEYS[2]) ~= consumer then
  return redis.error_reply('NUDGELEASE lease of ' .. stream .. ' not held by ' .. consumer)
end

local function idLess(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end

-- The batch's entries, in id order, and how many ARGV and KEYS each op
-- takes before its recipients.
local size = {M = {11, 5}, K = {14, 6}, R = {7, 4}, P = {7, 2}, C = {6, 0}, O = {6, 1}, X = {7, 0}}
-- width returns how many ARGV and KEYS the event at ARGV[a] takes.
local function width(a)
  local op = ARGV[a]
  local na, nk = size[op][1], size[op][2]
  local n = 0
  if op == 'M' then n = tonumber(ARGV[a + 10]) elseif op == 'K' then n = tonumber(ARGV[a + 13]) end
  return na + 2 * n, nk + 2 * n
end
local entries, ids = {}, {}
do
  local a = 19
  while a <= #ARGV do
    local op = ARGV[a]
    if not size[op] then
      return redis.error_reply('NUDGEBADOP unknown op ' .. tostring(op))
    end
    entries[#entries + 1] = ARGV[a + 1]
    if op ~= 'X' then ids[#ids + 1] = ARGV[a + 2] end
    a = a + width(a)
  end
end
if #entries == 0 then return {0, 0, 0, 0, 0, 0} end

-- Entries are applied in stream order. A consumer that took the shard over
-- while the one that lost it was still reading may find an older entry
-- pending for that one (read, then fenced off by the lease above): it
-- refuses the batch and claims the pending entries in order first.
-- One XPENDING from the oldest entry up to the batch's last tells both
-- that and which of the batch's entries are still pending, that is, not
-- applied.
local first, last = entries[1], entries[#entries]
local pendingNow = {}
do
  local p = redis.pcall('XPENDING', stream, group, '-', last, #entries + 16)
  if type(p) == 'table' then
    if p[1] and idLess(p[1][1], first) then
      return redis.error_reply('NUDGEORDER entry ' .. p[1][1] .. ' of ' .. p[1][2] ..
        ' is pending before ' .. first)
    end
    for _, e in ipairs(p) do pendingNow[e[1]] = true end
  end
end

-- each calls cmd key list... in slices: Lua's unpack takes a few thousand
-- values at most. It returns the replies, concatenated (a reply that is
-- not a list, one per slice).
local function each(cmd, key, list)
  local replies = {}
  for i = 1, #list, 1000 do
    local r = redis.call(cmd, key, unpack(list, i, math.min(i + 999, #list)))
    if type(r) == 'table' then
      for _, v in ipairs(r) do replies[#replies + 1] = v end
    else
      replies[#replies + 1] = r
    end
  end
  return replies
end

-- Which producer ids were applied before, in this dedupe bucket or the last.
local seenBefore = {}
if #ids > 0 then
  local cur = each('SMISMEMBER', KEYS[3], ids)
  local prev = each('SMISMEMBER', KEYS[4], ids)
  for i, id in ipairs(ids) do
    if cur[i] == 1 or prev[i] == 1 then seenBefore[id] = true end
  end
end
local newIDs = {}
local toAck = {}

local now = tonumber(ARGV[3])
local seenTTL, unreadTTL = tonumber(ARGV[5]), tonumber(ARGV[6])
local presenceTTL, recentCap = tonumber(ARGV[7]), tonumber(ARGV[8])
local wantEpisodes, wantRegistry = ARGV[11] == '1', ARGV[15] == '1'
local dauTTL, day, dayStart = tonumber(ARGV[12]), ARGV[13], ARGV[14]
local chunkTTL = tonumber(ARGV[16])
local conversionWindow, openedTTL = tonumber(ARGV[17]), tonumber(ARGV[18])

-- Counts and outbox records of the event being applied are pending until
-- it is applied whole (see the loop at the end).
-- They are flat arrays with a length, reused from event to event.
local counts = {}
local pending, np = {}, 0 -- field, n, field, n, ...
local pendingRec, nr = {}, 0 -- outbox lines
local records = {}
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
-- countDims counts n of a counter with every dimension.
local function countDims(metric, app, platform, reason, n)
  pending[np + 1], pending[np + 2] = metric .. '|' .. app .. '|' .. platform .. '|' .. reason, n
  np = np + 2
end
local function record(line)
  if wantEpisodes then
    pendingRec[nr + 1] = line
    nr = nr + 1
  end
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

local out = {0, 0, 0, 0, 0, 0}

-- convert attributes the close of an episode to the last reminder of it
-- pushed before the closing event was published, if that was within the
-- conversion window: it counts that stage converted, once (the episode is
-- gone with this close), and the time from push to read. rs is the
-- episode's push records, "stage|ms|platform" by stage, comma separated;
-- their times and the entry id's are both the shard's Redis clock, so a
-- push recorded in the same millisecond as the read was published, or
-- later, is not attributed (which came first is unknown).
local function convert(rs, app, entry)
  local published = tonumber(string.match(entry, '^(%d+)'))
  local stage, at, platform
  for s, t, p in string.gmatch(rs, '(%d+)|(%d+)|([^,]*)') do
    if tonumber(t) < published then stage, at, platform = s, tonumber(t), p end
  end
  if not stage then return end
  local d = published - at
  if d > conversionWindow then return end
  countDims(mRemindersConverted, app, platform, stage, 1)
  local le = readBuckets[#readBuckets]
  for _, b in ipairs(readBuckets) do
    if d <= b * 1000 then le = b break end
  end
  countDims(mReadDelay, app, platform, stage .. ':' .. le, 1)
end

-- closeEpisode ends user's episode in conv, if one is open: it removes the
-- conversation's count from the badge and deletes the episode. The badge
-- field exists whenever the episode does (both are made together, and the
-- badge hash lives at least as long), so the common case costs one HDEL.
-- entry is the stream entry of the event closing it.
local function closeEpisode(epKey, badgeKey, user, conv, app, entry)
  if redis.call('HDEL', badgeKey, conv) == 0 then
    return
  end
  local st = redis.call('HMGET', epKey, 'id', 'app', 'rs')
  redis.call('DEL', epKey)
  if st[1] then
    count(mEpisodesClosed, app, 1)
    record('C|' .. user .. '|' .. conv .. '|' .. st[1] .. '|' .. (st[2] or app))
    if st[3] then convert(st[3], st[2] or app, entry) end
  end
end

-- firstApply checks that the entry is not applied yet and its producer id
-- not seen: it returns true when the event is to be applied now. ack says
-- whether the entry is acknowledged with this event (not for a chunk
-- before the last).
local function firstApply(entry, id, app, ack)
  if not pendingNow[entry] then
    out[3] = out[3] + 1 -- another consumer applied it already
    return false
  end
  if ack then toAck[#toAck + 1] = entry end
  if seenBefore[id] then
    count(mDuplicates, app, 1)
    pendingDup = 1
    return false
  end
  seenBefore[id] = true
  newIDs[#newIDs + 1] = id
  count(mEventsApplied, app, 1)
  pendingApplied = 1
  return true
end

-- message applies the part of a message every chunk shares: the
-- conversation's last message, the recent list, the sender's read.
local function message(a, k)
  local app, conv, msg = ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  local sender, preview, title, ts = ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9]
  local convKey, recentKey, senderEp, senderBadge, dauKey = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
  -- TTLs are set when a key is made, not on every write: a key lives
  -- UnreadTTL from its creation, then is made again by the next write.
  if redis.call('HSET', convKey, 'msg', msg, 'sender', sender, 'preview', preview, 'ts', ts) > 0 then
    redis.call('EXPIRE', convKey, unreadTTL)
  end
  if title ~= '' then redis.call('HSET', convKey, 'title', title) end -- the last one given stays
  local len = redis.call('LPUSH', recentKey, msg)
  if len == 1 then
    redis.call('EXPIRE', recentKey, unreadTTL)
  elseif len > 2 * recentCap then
    redis.call('LTRIM', recentKey, 0, recentCap - 1)
  end
  -- Writing to a conversation means having read it.
  closeEpisode(senderEp, senderBadge, sender, conv, app, ARGV[a + 1])
  active(dauKey, app, sender)
end

-- recipients applies n recipients, whose users start at ARGV[a] and keys
-- at KEYS[k], of the message entry of conv.
local function recipients(entry, app, conv, msg, ts, n, a, k)
  local mentions, opened = 0, nil
  for i = 0, n - 1 do
    local user, mentioned = ARGV[a + 2 * i], ARGV[a + 1 + 2 * i]
    local ep, badge = KEYS[k + 2 * i], KEYS[k + 1 + 2 * i]
    -- The badge's field is the unread count; its first message opens the
    -- episode. An episode that expired before its badge field (a badge
    -- kept alive by the user's other conversations) is opened again: its
    -- HSET of 'last' adds a field instead of replacing one.
    local opens = redis.call('HINCRBY', badge, conv, 1) == 1
    if not opens then
      local added
      if mentioned == '1' then
        added = redis.call('HSET', ep, 'm', '1', 'last', msg)
      else
        added = redis.call('HSET', ep, 'last', msg)
      end
      if added > 0 then
        redis.call('HSET', badge, conv, 1)
        opens = true
      end
    end
    if opens then
      redis.call('HSET', ep, 'id', entry, 'since', ts, 'app', app, 'm', mentioned, 'last', msg)
      redis.call('EXPIRE', ep, unreadTTL)
      redis.call('EXPIRE', badge, unreadTTL)
      if wantEpisodes then
        if not opened then opened = {'O', conv, entry, app, ts, ARGV[3]} end
        opened[#opened + 1] = user
        opened[#opened + 1] = mentioned
      end
      count(mEpisodesOpened, app, 1)
    end
    if mentioned == '1' then mentions = mentions + 1 end
  end
  if mentions > 0 then count(mMentions, app, mentions) end
  if opened then record(table.concat(opened, '|')) end
end

-- Each op applies one event; a and k are its first ARGV and KEYS index.
local ops = {}
ops.M = function(a, k)
  local entry, id, app, n = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 10])
  if firstApply(entry, id, app, true) then
    message(a, k)
    recipients(entry, app, ARGV[a + 4], ARGV[a + 5], ARGV[a + 9], n, a + 11, k + 5)
    count(mMessagesSent, app, 1)
    count(mRecipients, app, n)
  end
end
ops.K = function(a, k)
  local entry, id, app = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local total, chunk, nchunks, n = tonumber(ARGV[a + 10]), tonumber(ARGV[a + 11]), tonumber(ARGV[a + 12]), tonumber(ARGV[a + 13])
  local progress = KEYS[k + 5]
  local done = tonumber(redis.call('GET', progress) or '0')
  if chunk < done or (chunk > 0 and done == 0) then
    return -- applied by an earlier attempt, or the message was finished (applied, a duplicate, dead-lettered)
  end
  if chunk > done then
    error('chunk ' .. chunk .. ' of ' .. entry .. ' before chunk ' .. done)
  end
  local final = chunk == nchunks - 1
  if chunk == 0 then
    if not firstApply(entry, id, app, final) then
      if pendingNow[entry] and not final then toAck[#toAck + 1] = entry end -- a duplicate: finished now
      return
    end
    message(a, k)
    count(mMessagesSent, app, 1)
    count(mRecipients, app, total)
  elseif final then
    toAck[#toAck + 1] = entry
  end
  recipients(entry, app, ARGV[a + 4], ARGV[a + 5], ARGV[a + 9], n, a + 14, k + 6)
  if final then
    redis.call('DEL', progress)
  else
    redis.call('SET', progress, chunk + 1, 'EX', chunkTTL)
  end
end
ops.R = function(a, k)
  local entry, id, app, conv, user, upto = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
  local ep, badge, recentKey, dauKey = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
  if firstApply(entry, id, app, true) then
    count(mReads, app, 1)
    active(dauKey, app, user)
    local full = true
    if upto ~= '' then
      -- A read of the last message (the common case) costs one HGET.
      local last = redis.call('HGET', ep, 'last')
      if last and last ~= upto then
        -- Read up to an older message: the messages after it stay unread.
        local pos = redis.call('LPOS', recentKey, upto)
        if pos == false and redis.call('LLEN', recentKey) >= recentCap then
          full = false -- older than we remember: the count stands
        elseif pos and pos > 0 then
          local n = tonumber(redis.call('HGET', badge, conv)) or pos
          redis.call('HSET', badge, conv, math.min(n, pos))
          full = false
        end
      end
    end
    if full then closeEpisode(ep, badge, user, conv, app, entry) end
  end
end
ops.P = function(a, k)
  local entry, id, app, user, status, device = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6]
  local pkey, dauKey = KEYS[k], KEYS[k + 1]
  if firstApply(entry, id, app, true) then
    count(mPresenceEvents, app, 1)
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
  local entry, id, app, metric, payload = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  if firstApply(entry, id, app, true) then
    count(metric, app, 1)
    if wantRegistry then
      redis.call('XADD', KEYS[10], '*', 'e', payload)
      out[6] = out[6] + 1
    end
  end
end

ops.O = function(a, k)
  local entry, id, app, platform, stage = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5]
  if firstApply(entry, id, app, true) then
    count(mOpenedEvents, app, 1)
    if redis.call('SET', KEYS[k], '1', 'NX', 'EX', openedTTL) then
      countDims(mRemindersOpened, app, platform, stage, 1)
    end
  end
end

local function dead(entry, reason, detail, app, deliveries, payload)
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[10], '*',
    'reason', reason, 'detail', detail, 'stream', stream, 'entry', entry,
    'deliveries', deliveries, 'consumer', consumer, 'at', ARGV[3], 'payload', payload)
  out[4] = out[4] + 1
  local f = 'dead_lettered|' .. app .. '||' .. reason
  counts[f] = (counts[f] or 0) + 1
end

local a, k = 19, 11
while a <= #ARGV do
  local op = ARGV[a]
  local na, nk = width(a)
  if op == 'X' then
    local entry = ARGV[a + 1]
    if pendingNow[entry] then
      toAck[#toAck + 1] = entry
      dead(entry, ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6])
    else
      out[3] = out[3] + 1 -- another consumer dead-lettered it already
    end
  else
    np, nr, pendingApplied, pendingDup = 0, 0, 0, 0
    -- A runtime error (a key of the wrong type, say) would leave the batch
    -- half applied, with no rollback. Each event runs under pcall instead:
    -- one that fails is acknowledged, goes to the dead-letter stream with
    -- the error, and its counts are dropped.
    local ok, err = pcall(ops[op], a, k)
    if ok then
      for i = 1, np, 2 do
        local f = pending[i]
        counts[f] = (counts[f] or 0) + pending[i + 1]
      end
      out[1], out[2] = out[1] + pendingApplied, out[2] + pendingDup
      for i = 1, nr do records[#records + 1] = pendingRec[i] end
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
      if op == 'K' then redis.call('DEL', KEYS[k + 5]) end
      toAck[#toAck + 1] = entry
      dead(entry, reasonApplyFailed, tostring(err), ARGV[a + 3], '0', payload)
    end
  end
  a, k = a + na, k + nk
end

if #toAck > 0 then
  for i = 1, #toAck, 1000 do
    redis.call('XACK', stream, group, unpack(toAck, i, math.min(i + 999, #toAck)))
  end
end
if #newIDs > 0 then
  each('SADD', KEYS[3], newIDs)
  redis.call('EXPIRE', KEYS[3], seenTTL)
end
if #records > 0 then
  redis.call('XADD', KEYS[9], '*', 'r', table.concat(records, '\n'))
  out[5] = 1
end
-- A HyperLogLog PFADD left unchanged exists already, with its TTL and its
-- index entry, both given when it was made (today's entry leaves the
-- index only once the day is past).
for key, users in pairs(dau) do
  local changed = 0
  for _, c in ipairs(each('PFADD', key, users)) do changed = changed + c end
  if changed > 0 then
    redis.call('EXPIRE', key, dauTTL)
    redis.call('ZADD', KEYS[7], dayStart, day .. '|' .. dauApp[key])
    redis.call('EXPIRE', KEYS[7], dauTTL)
  end
end
-- The minute's counters hash gets its TTL with its index entry: a minute
-- ZADD NX finds listed has its hash, made with a TTL by whoever listed it
-- (the flusher takes both away together, and gives a snapshot without a
-- TTL one).
local any = false
for f, n in pairs(counts) do
  redis.call('HINCRBY', KEYS[5], f, n)
  any = true
end
if any and redis.call('ZADD', KEYS[6], 'NX', ARGV[4], ARGV[4]) == 1 then
  redis.call('EXPIRE', KEYS[5], ARGV[9])
  redis.call('EXPIRE', KEYS[6], ARGV[9])
end
return out
