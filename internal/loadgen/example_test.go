package loadgen_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/loadgen"
	"github.com/nudgehq/nudge/keys"
)

// Publish a minute of traffic at 5,000 entries per second, with 1% bad
// entries for the dead-letter stream, recording every valid event.
func Example() {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer rdb.Close()
	rec, err := os.Create("events.ndjson")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer rec.Close()

	r, err := loadgen.New(rdb, loadgen.Config{
		Seed: 42, Keyspace: keys.New("nudge", 8),
		Rate: 5_000, Duration: time.Minute, BadRate: 0.01,
		Record: rec,
		Progress: func(s loadgen.Stats) {
			fmt.Fprintf(os.Stderr, "%v: %d entries\n", s.Elapsed.Round(time.Second), s.Events)
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	st, err := r.Run(context.Background())
	fmt.Println(st.Messages, st.Reads, st.BadByReason, err)
}
