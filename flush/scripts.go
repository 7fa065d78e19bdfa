package flush

import "github.com/nudgehq/nudge/internal/datastore"

// snapshotScript moves a closed minute out of the writers' way.
//
//	KEYS[1] counters hash of the minute      keys.Counters(shard, minute)
//	KEYS[2] counter index of the shard       keys.CounterIndex(shard)
//	KEYS[3] snapshot to create               keys.Snapshot(shard, flushID)
//	KEYS[4] snapshot index of the shard      keys.SnapshotIndex(shard)
//	ARGV[1] the minute, as in the counter index
//	ARGV[2] the flush id
//	ARGV[3] TTL in ms to give a snapshot that has none (counters.SafetyTTL)
//
// It removes the minute from the counter index; if the counters hash exists
// it renames it to the snapshot (keeping its TTL, or setting ARGV[3] if it
// has none, so a snapshot never outlives the flush ids kept in Postgres) and
// lists the flush id in the snapshot index with the minute as score.
// Returns 1 if a snapshot was taken, 0 if the hash was gone.
var snapshotScript = datastore.NewScript("flusher", `
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('RENAME', KEYS[1], KEYS[3])
if redis.call('PTTL', KEYS[3]) < 0 then
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
redis.call('ZADD', KEYS[4], ARGV[1], ARGV[2])
return 1
`)

// deleteSnapshotScript forgets a snapshot once Postgres has it.
//
//	KEYS[1] the snapshot                 keys.Snapshot(shard, flushID)
//	KEYS[2] snapshot index of the shard  keys.SnapshotIndex(shard)
//	ARGV[1] the flush id
var deleteSnapshotScript = datastore.NewScript("flusher", `
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
`)

// mergeScript counts the distinct members of several HyperLogLogs given by
// value (read from other slots, so that it works on Redis Cluster).
//
//	KEYS[1]      merge destination, a fresh keys.Keyspace.FlusherMerge
//	KEYS[2..n+1] temporary copies, fresh keys.Keyspace.FlusherMerge keys
//	ARGV[1..n]   raw HyperLogLogs, copied to KEYS[2..n+1]
//
// Every key is deleted before it returns. Returns the count, or the error of
// PFMERGE or PFCOUNT (a corrupt value).
var mergeScript = datastore.NewScript("flusher", `
for i = 1, #ARGV do
  redis.call('SET', KEYS[i + 1], ARGV[i], 'PX', 60000)
end
local res = redis.pcall('PFMERGE', KEYS[1], unpack(KEYS, 2))
if type(res) == 'table' and res.err then
  redis.call('DEL', unpack(KEYS))
  return res
end
res = redis.pcall('PFCOUNT', KEYS[1])
redis.call('DEL', unpack(KEYS))
return res
`)
