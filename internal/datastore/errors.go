package datastore

import (
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Codes of Redis error replies: the first word of the reply.
const (
	CodeErr       = "ERR"       // a generic error ("ERR no such key" for XINFO of a missing stream)
	CodeNoGroup   = "NOGROUP"   // the consumer group (or its stream) does not exist
	CodeBusyGroup = "BUSYGROUP" // XGROUP CREATE of a group that exists
	CodeNoScript  = "NOSCRIPT"  // EVALSHA of a script not cached (go-redis then sends it)
)

// Nudge's own codes: its scripts fail with redis.error_reply('<code>
// <message>'), and the Go side matches them with HasCode. The Lua side
// writes the code as text; TestScriptCodesAreDeclared holds every script's
// codes to this list.
const (
	CodeLease    = "NUDGELEASE"    // ingest's apply: the shard's lease is not this consumer's
	CodeOrder    = "NUDGEORDER"    // ingest's apply: an older entry than the batch's is pending
	CodeBadOp    = "NUDGEBADOP"    // ingest's apply: an op it does not know (a bug)
	CodeArgs     = "NUDGEARGS"     // the producer guard: no event, or a bad cap
	CodeTooLarge = "NUDGETOOLARGE" // the producer guard: the event is over the contract's size
)

// ScriptCodes are Nudge's own codes (CodeLease...).
var ScriptCodes = []string{CodeLease, CodeOrder, CodeBadOp, CodeArgs, CodeTooLarge}

// refusedCodes are the replies of a command Redis did not run, for a reason
// that passes.
var refusedCodes = []string{
	"OOM",          // out of memory under noeviction
	"LOADING",      // loading its data at start
	"BUSY",         // a script runs too long
	"READONLY",     // a replica (a failover under way)
	"MASTERDOWN",   // a replica cut off from its master
	"TRYAGAIN",     // a cluster slot moving, keys split
	"CLUSTERDOWN",  // the cluster is down
	"MOVED", "ASK", // the slot is elsewhere (go-redis's cluster client follows these)
	CodeNoScript,
}

// Code returns the code of a Redis error reply (its first word: "OOM",
// "NOGROUP", "NUDGELEASE"), and "" for any other error: a network error, a
// timeout, redis.Nil, a context's.
func Code(err error) string {
	var rerr redis.Error
	if err == nil || errors.Is(err, redis.Nil) || !errors.As(err, &rerr) {
		return ""
	}
	code, _, _ := strings.Cut(rerr.Error(), " ")
	return code
}

// HasCode reports whether err is a Redis error reply with one of codes.
func HasCode(err error, codes ...string) bool {
	c := Code(err)
	for _, want := range codes {
		if c != "" && c == want {
			return true
		}
	}
	return false
}

// Refused reports whether err is Redis refusing a command it did not run,
// for a reason that passes: out of memory, loading, busy with a script, a
// replica, a cluster slot moving or the cluster down, a script not cached.
// The same command may be sent again as it is: nothing of it was done.
func Refused(err error) bool { return HasCode(err, refusedCodes...) }

// NoSuchKey reports whether err is "ERR no such key": XINFO of a stream
// that does not exist.
func NoSuchKey(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && rerr.Error() == "ERR no such key"
}
