// Command crashflusher is a flusher that SIGKILLs itself right after one
// step of a flush, for the crash tests of package flush. It is built by
// those tests only (testdata is outside ./...).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"syscall"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/flush"
	"github.com/nudgehq/nudge/keys"
)

func main() {
	var (
		redisAddr = flag.String("redis-addr", "127.0.0.1:6379", "Redis address")
		dbURL     = flag.String("database-url", "", "PostgreSQL URL")
		prefix    = flag.String("prefix", "", "key prefix")
		shards    = flag.Int("shards", 0, "shards")
		crashAt   = flag.String("crash-at", flush.StepSnapshotted, "step after which to die")
	)
	flag.Parse()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: *redisAddr})
	db, err := pgxpool.New(ctx, *dbURL)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	f, err := flush.New(rdb, db, flush.Config{
		Keyspace: keys.New(*prefix, *shards),
		Hook: func(step string) error {
			if step == *crashAt {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal is on its way
			}
			return nil
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if _, err := f.FlushOnce(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Fprintln(os.Stderr, "crashflusher: step", *crashAt, "never came")
	os.Exit(3)
}
