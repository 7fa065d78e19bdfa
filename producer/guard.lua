#!lua name=nudge
-- The producer guard: producers that are not written in Go (a Node socket
-- server, a Laravel app, redis-cli) publish through it instead of XADD, and
-- an event over the contract's 64 KiB is refused at the door instead of
-- being stored in the stream and dead-lettered later.
--
--   FCALL nudge_publish 1 <stream> <event JSON> [<maxlen>]
--
-- KEYS[1] a shard stream (<prefix>:{s<k>}:events). ARGV[1] the event,
-- ARGV[2] an optional MAXLEN ~ cap. Returns the entry id. Errors:
-- NUDGEARGS (no event, or a bad cap), NUDGETOOLARGE (over 65536 bytes).
redis.register_function('nudge_publish', function(keys, args)
  local ev, cap = args[1], args[2]
  if #keys ~= 1 or not ev or ev == '' then
    return redis.error_reply('NUDGEARGS usage: FCALL nudge_publish 1 <stream> <event JSON> [<maxlen>]')
  end
  if #ev > 65536 then
    return redis.error_reply('NUDGETOOLARGE the event is ' .. #ev .. ' bytes, over the 65536 of the event contract')
  end
  if cap then
    if not string.match(cap, '^[1-9][0-9]*$') then
      return redis.error_reply('NUDGEARGS maxlen must be a positive integer, not ' .. cap)
    end
    return redis.call('XADD', keys[1], 'MAXLEN', '~', cap, '*', 'event', ev)
  end
  return redis.call('XADD', keys[1], '*', 'event', ev)
end)
