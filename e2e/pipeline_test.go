package e2e_test

import (
	"os/exec"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/harness"
	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/producer"
)

// pipeline is a test's own Nudge on the shared Redis: a key prefix of four
// shards, a queue, a migrated database, and the flags its processes share.
type pipeline struct {
	rdb    *redis.Client
	ks     keys.Keyspace
	queue  string
	db     *pgxpool.Pool
	dbURL  string
	pub    *producer.Producer
	common []string
}

func newPipeline(t *testing.T, name string) *pipeline {
	t.Helper()
	rdb, prefix := redistest.New(t)
	p := &pipeline{rdb: rdb, ks: keys.New(prefix, 4), queue: harness.Queue(t, name, prefix)}
	p.db, p.dbURL = pgtest.NewMigrated(t)
	p.pub = producer.New(rdb, producer.Config{Keyspace: p.ks})
	p.common = []string{"-redis-url", "redis://" + redistest.Addr() + "/0", "-prefix", prefix, "-shards", "4",
		"-database-url", p.dbURL, "-queue", p.queue, "-stages", "2s", "-log-level", "warn"}
	return p
}

// start runs the command at dir (../cmd/ingest) with the pipeline's flags
// and args, until the test ends.
func (p *pipeline) start(t *testing.T, dir string, args ...string) *exec.Cmd {
	t.Helper()
	return harness.Start(t, dir, append(append([]string{}, p.common...), args...)...)
}
