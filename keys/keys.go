// Package keys builds every Redis key Nudge reads or writes.
//
// Business code never formats a key itself: it asks a Keyspace. Every key
// that belongs to a shard carries the Redis Cluster hash tag {s<k>}, so all
// keys that one atomic step (a Lua script) touches live in the same slot.
// Events of a conversation, and the unread state of its members, live in the
// conversation's shard; presence of a user lives in the user's shard.
//
// The full list of keys, their types and their lifetimes is in docs/keys.md.
package keys

import (
	"hash/crc32"
	"strconv"
	"strings"
	"time"
)

// DefaultPrefix is the prefix of every key when Keyspace.Prefix is empty.
const DefaultPrefix = "nudge"

// Keyspace names keys under one prefix and for one number of shards.
type Keyspace struct {
	// Prefix starts every key. Default "nudge". Tests use a random prefix.
	Prefix string
	// Shards is the number of event streams. Default 8. Changing it moves
	// conversations to other shards, so drain the streams first.
	Shards int
}

// DefaultShards is the number of shards when Keyspace.Shards is zero.
const DefaultShards = 8

// New returns a Keyspace with defaults filled in.
func New(prefix string, shards int) Keyspace {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if shards <= 0 {
		shards = DefaultShards
	}
	return Keyspace{Prefix: prefix, Shards: shards}
}

// Shard returns the shard of a routing key (a conversation id for message and
// read events, a user id for presence, device and preference events):
// CRC-32 (IEEE) of the key's bytes, modulo the number of shards. Producers in
// other languages compute the same: PHP crc32($id) % $n, Node zlib.crc32(id) % n.
//
// A scoped id (see Scope) has the shard of its id: the app never moves an
// event to another stream.
func (k Keyspace) Shard(routingKey string) int {
	_, id := Unscope(routingKey)
	return int(crc32.ChecksumIEEE([]byte(id)) % uint32(k.Shards))
}

// Apps share nothing: the users, conversations and event ids of one app
// never meet another's in Redis or in the registry, even when their names
// are equal. Every id is kept under its scoped name: the id itself for the
// default app (so data written before apps were isolated stays the default
// app's), "<app>/<id>" for any other. Ids never hold "/" and app names
// never hold it either (event.validID, event's app pattern), so a scoped
// name is never mistaken for another.

// ScopeSep separates an app from an id in a scoped name.
const ScopeSep = "/"

// Scope returns the scoped name of an id of app; defaultApp is the app
// whose ids stay unscoped.
func Scope(app, defaultApp, id string) string {
	if app == defaultApp || app == "" || id == "" {
		return id
	}
	return app + ScopeSep + id
}

// Unscope splits a scoped name into its app ("" for the default app) and
// its id as the app knows it.
func Unscope(scoped string) (app, id string) {
	if i := strings.Index(scoped, ScopeSep); i >= 0 {
		return scoped[:i], scoped[i+len(ScopeSep):]
	}
	return "", scoped
}

func (k Keyspace) tag(shard int) string {
	return k.Prefix + ":{s" + strconv.Itoa(shard) + "}:"
}

// Stream is the event stream of a shard (a Redis stream).
func (k Keyspace) Stream(shard int) string { return k.tag(shard) + "events" }

// DeadLetter is the dead-letter stream of a shard: entries that could not be
// applied, with the reason. Trimmed by MAXLEN ~.
func (k Keyspace) DeadLetter(shard int) string { return k.tag(shard) + "dead" }

// Lease is the ingest lease of a shard: the consumer that owns the shard.
// String with a TTL.
func (k Keyspace) Lease(shard int) string { return k.tag(shard) + "lease" }

// Seen is the set of producer event ids applied in one dedupe window bucket.
// Set with a TTL of two windows.
func (k Keyspace) Seen(shard int, bucket int64) string {
	return k.tag(shard) + "seen:" + strconv.FormatInt(bucket, 10)
}

// Episode holds the open unread episode of a user in a conversation: a hash
// with the episode id, unread count, first unread time, last message and
// whether the user was mentioned. Deleted when the user reads; TTL otherwise.
func (k Keyspace) Episode(shard int, user, conversation string) string {
	return k.tag(shard) + "ep:" + conversation + "|" + user
}

// Badge holds a user's unread counts per conversation within one shard: a
// hash conversation -> count. The badge is the sum over all shards.
// Fields are removed on read; TTL otherwise.
func (k Keyspace) Badge(shard int, user string) string {
	return k.tag(shard) + "badge:" + user
}

// Conversation holds the last message of a conversation (id, sender,
// preview, time): a hash with a TTL.
func (k Keyspace) Conversation(shard int, conversation string) string {
	return k.tag(shard) + "conv:" + conversation
}

// Recent holds the ids of the last messages of a conversation, newest
// first, capped: a list with a TTL. It resolves "read up to message X".
func (k Keyspace) Recent(shard int, conversation string) string {
	return k.tag(shard) + "recent:" + conversation
}

// Presence holds a user's online devices: a sorted set device -> expiry
// (unix ms), with a TTL.
func (k Keyspace) Presence(shard int, user string) string {
	return k.tag(shard) + "presence:" + user
}

// Counters holds the analytics counters of one minute bucket of a shard:
// a hash "metric|app|platform|reason" -> count. Renamed to a Snapshot by
// the flusher and deleted once persisted.
func (k Keyspace) Counters(shard int, minute int64) string {
	return k.tag(shard) + "cnt:" + strconv.FormatInt(minute, 10)
}

// CounterIndex lists the minute buckets of a shard that hold counters: a
// sorted set minute -> minute. The flusher removes a minute once it moved it.
func (k Keyspace) CounterIndex(shard int) string { return k.tag(shard) + "cntidx" }

// Snapshot is a counters hash taken by the flusher under a flush id, kept
// until the flush is committed in Postgres.
func (k Keyspace) Snapshot(shard int, flushID string) string {
	return k.tag(shard) + "snap:" + flushID
}

// SnapshotIndex lists the snapshots of a shard not yet deleted: a sorted set
// flush id -> minute.
func (k Keyspace) SnapshotIndex(shard int) string { return k.tag(shard) + "snapidx" }

// ActiveUsers is the HyperLogLog of distinct active users of an app on a
// day (UTC, "20060102"), within one shard. TTL two days.
func (k Keyspace) ActiveUsers(shard int, day, app string) string {
	return k.tag(shard) + "dau:" + day + ":" + app
}

// ActiveUsersIndex lists the (day, app) pairs that have an ActiveUsers key
// in a shard: a sorted set "day|app" -> unix day start.
func (k Keyspace) ActiveUsersIndex(shard int) string { return k.tag(shard) + "dauidx" }

// Sent records the devices a reminder was already delivered to: a set of
// device tokens' digests with a TTL. It keeps a retried reminder from
// pushing a device twice.
func (k Keyspace) Sent(shard int, reminderID string) string {
	return k.tag(shard) + "sent:" + reminderID
}

// RateLimit holds the reminders pushed to a user in one window: a set of
// reminder ids (its size is the count; adding a reminder twice counts it
// once), with a TTL of the window.
func (k Keyspace) RateLimit(shard int, user string, window int64) string {
	return k.tag(shard) + "sends:" + user + ":" + strconv.FormatInt(window, 10)
}

// SendLock is held by the worker sending to a user, so two reminders of
// the user due together make one digest, not two pushes: a string with a
// TTL, deleted when the send is done.
func (k Keyspace) SendLock(shard int, user string) string {
	return k.tag(shard) + "lock:" + user
}

// Outbox holds what ingest's relay still has to tell the reminder
// scheduler: the episodes a batch opened and closed, written by the apply
// script in the same step as the unread state (a stream). The relay deletes
// an entry once the scheduler took it.
func (k Keyspace) Outbox(shard int) string { return k.tag(shard) + "outbox" }

// RegistryOutbox holds the device and preference events ingest applied and
// the registry (PostgreSQL) has not stored yet, in stream order (a stream).
// The relay deletes an entry once the registry stored it.
func (k Keyspace) RegistryOutbox(shard int) string { return k.tag(shard) + "regbox" }

// Opened marks a reminder the user opened (notification.opened), so that
// it is counted once however often the app reports it: a string with a TTL,
// in the user's shard.
func (k Keyspace) Opened(shard int, user, episode string, stage int) string {
	return k.tag(shard) + "opened:" + user + "|" + episode + "|" + strconv.Itoa(stage)
}

// Chunk holds how many chunks of a large message's recipients the apply
// script has applied (a string): a message with more recipients than one
// script should touch is applied in chunks, and acknowledged with its last.
// Deleted with the last chunk; TTL otherwise.
func (k Keyspace) Chunk(shard int, entry string) string {
	return k.tag(shard) + "chunk:" + entry
}

// Members is the set of live ingest consumers: a sorted set consumer ->
// last heartbeat (unix ms). Stale members are removed by their peers.
func (k Keyspace) Members() string { return k.Prefix + ":{ingest}:members" }

// SessionsEpoch is the generation of the report server's browser
// sessions: a string counter, incremented by `report sessions revoke-all`;
// a session cookie of an older generation is refused. One key, no TTL.
func (k Keyspace) SessionsEpoch() string { return k.Prefix + ":{report}:sessions:epoch" }

// SessionRevoked marks a browser session of the report server as signed
// out: a string whose TTL ends when the session would have expired.
func (k Keyspace) SessionRevoked(id string) string {
	return k.Prefix + ":{report}:sessions:revoked:" + id
}

// SignInLink is a one-time sign-in link of the report server, by the
// SHA-256 of its code (hex): a string holding the role it signs in as,
// deleted when used (GETDEL), with a TTL of the link's lifetime.
func (k Keyspace) SignInLink(codeSum string) string {
	return k.Prefix + ":{report}:sessions:link:" + codeSum
}

// DemoMarker says that cmd/demo made the prefix: the demo clears a prefix
// at start only if it holds this key or no key at all. Deleted, last, when
// the demo exits.
func (k Keyspace) DemoMarker() string { return k.Prefix + ":{demo}:made-by-demo" }

// FlusherLease is the flusher's lease: a string holding the owner's random
// id, with a TTL of flush.Config.LeaseTTL. The flusher's keys share the
// hash tag {flusher}, so the merge script's keys live in one Redis Cluster
// slot.
func (k Keyspace) FlusherLease() string { return k.Prefix + ":{flusher}:lease" }

// FlusherMerge is a temporary key of the daily active users merge: a copy
// of a shard's HyperLogLog (i from 1), or the merge result (i 0), deleted
// by the script that creates it, with a one-minute TTL in case the script
// fails.
func (k Keyspace) FlusherMerge(id string, i int) string {
	return k.Prefix + ":{flusher}:merge:" + id + ":" + strconv.Itoa(i)
}

// asynq keeps its keys outside Nudge's prefix, under "asynq:", which it
// does not make configurable; its layout (asynq's internal/base) is not
// exported. These functions are that layout for Nudge's code, tests and
// tools; TestAsynqLayout pins them to the asynq version in go.mod.

// AsynqQueues is asynq's set of every queue's name.
const AsynqQueues = "asynq:queues"

// AsynqQueue is the prefix of every key of one asynq queue: its task
// hashes, lists (pending, active) and sorted sets (scheduled, retry,
// archived, completed, lease), all in the queue's hash tag.
func AsynqQueue(queue string) string { return "asynq:{" + queue + "}:" }

// AsynqTask is the hash of one task of an asynq queue, by task id.
func AsynqTask(queue, id string) string { return AsynqQueue(queue) + "t:" + id }

// AsynqScheduled is the sorted set of an asynq queue's scheduled tasks, by
// due time (unix seconds).
func AsynqScheduled(queue string) string { return AsynqQueue(queue) + "scheduled" }

// Minute returns the minute bucket (unix minutes) of t.
func Minute(t time.Time) int64 { return t.Unix() / 60 }

// Day returns the UTC day of t as "20060102".
func Day(t time.Time) string { return t.UTC().Format("20060102") }
