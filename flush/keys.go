package flush

import (
	"strconv"

	"github.com/nudgehq/nudge/keys"
)

// The flusher's own keys. They belong in package keys, beside the others;
// they are here until keys has them. All share the hash tag {flusher}, so
// the merge script's keys live in one Redis Cluster slot.

// LeaseKey is the flusher lease: a string holding the owner's random id,
// with a TTL of Config.LeaseTTL. "<prefix>:{flusher}:lease".
func LeaseKey(ks keys.Keyspace) string { return ks.Prefix + ":{flusher}:lease" }

// mergeKey is a temporary key of the daily active users merge: a copy of a
// shard's HyperLogLog, or the merge result, deleted by the script that
// creates it (and given a one-minute TTL in case the script fails).
// "<prefix>:{flusher}:merge:<id>:<i>".
func mergeKey(ks keys.Keyspace, id string, i int) string {
	return ks.Prefix + ":{flusher}:merge:" + id + ":" + strconv.Itoa(i)
}
