package producer

import (
	"context"
	_ "embed"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// GuardLibrary is the Redis Function library "nudge" (guard.lua): its
// function nudge_publish adds an event to a shard stream as Publish does,
// and refuses one over the contract's 64 KiB. It is for producers in other
// languages, which cannot use this package's checks:
//
//	FCALL nudge_publish 1 nudge:{s5}:events '{"v":1,...}' 1000000
//
// It guards producers that use it; it cannot stop one that may XADD (Redis
// applies the caller's ACL to the commands a function runs, so a producer
// able to publish through it can XADD directly). Whatever producers do,
// ingest never reads more than a bounded size of an entry.
//
//go:embed guard.lua
var GuardLibrary string

// InstallGuard loads GuardLibrary into rdb, replacing an older version
// (FUNCTION LOAD REPLACE). On a Redis Cluster, load it on every master.
func InstallGuard(ctx context.Context, rdb redis.UniversalClient) error {
	if err := rdb.FunctionLoadReplace(ctx, GuardLibrary).Err(); err != nil {
		return fmt.Errorf("load the producer guard: %w", err)
	}
	return nil
}
