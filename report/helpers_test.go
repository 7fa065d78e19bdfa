package report_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/report"
)

func TestMain(m *testing.M) {
	flag.Parse()
	if !testing.Short() {
		// The queue is made once, and deleted after the leak check.
		if err := makeListedQueue(); err != nil {
			fmt.Fprintln(os.Stderr, "report tests:", err)
			os.Exit(1)
		}
		goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
			if err := deleteListedQueue(); err != nil {
				fmt.Fprintln(os.Stderr, "report tests:", err)
			}
			os.Exit(code)
		}))
	}
	goleak.VerifyTestMain(m)
}

const testShards = 3

// bundle is what a test works with: a migrated database of its own, a
// Redis prefix of its own, and a Store over both.
type bundle struct {
	db    *pgxpool.Pool
	rdb   *redis.Client
	ks    keys.Keyspace
	store *report.Store
}

func setup(t testing.TB) *bundle {
	t.Helper()
	rdb, prefix := redistest.New(t)
	db, _ := pgtest.NewMigrated(t)
	ks := keys.New(prefix, testShards)
	store, err := report.NewStore(db, report.StoreConfig{Redis: rdb, Keyspace: ks})
	if err != nil {
		t.Fatal(err)
	}
	return &bundle{db: db, rdb: rdb, ks: ks, store: store}
}

// sample is a counter increment at a time.
type sample struct {
	at time.Time
	d  counters.Dims
	v  int64
}

func at(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

func msg(app string) counters.Dims { return counters.Dims{Metric: counters.MessagesSent, App: app} }

// insert writes samples into the counters tables as the flusher does: the
// minute, its hour and its UTC day, in one transaction.
func (b *bundle) insert(t testing.TB, samples ...sample) {
	t.Helper()
	if len(samples) == 0 {
		return
	}
	ctx := context.Background()
	byTime := func(a, b sample) int { return a.at.Compare(b.at) }
	lo, hi := slices.MinFunc(samples, byTime).at, slices.MaxFunc(samples, byTime).at
	err := pgx.BeginFunc(ctx, b.db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SELECT counters_minute_create_partitions($1, $2)", lo, hi); err != nil {
			return err
		}
		batch := &pgx.Batch{}
		for _, s := range samples {
			for _, q := range []struct {
				table  string
				bucket time.Time
			}{
				{"counters_minute", s.at.Truncate(time.Minute)},
				{"counters_hour", s.at.Truncate(time.Hour)},
				{"counters_day", s.at.Truncate(24 * time.Hour)},
			} {
				batch.Queue(`INSERT INTO `+q.table+` AS c (bucket, metric, app, platform, reason, value)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (bucket, metric, app, platform, reason) DO UPDATE SET value = c.value + EXCLUDED.value`,
					q.bucket, s.d.Metric, s.d.App, s.d.Platform, s.d.Reason, s.v)
			}
		}
		return tx.SendBatch(ctx, batch).Close()
	})
	if err != nil {
		t.Fatalf("insert counters: %v", err)
	}
}

func (b *bundle) setDAU(t testing.TB, day, app string, users int64) {
	t.Helper()
	_, err := b.db.Exec(context.Background(), `INSERT INTO daily_active_users (day, app, users) VALUES ($1::date, $2, $3)
ON CONFLICT (day, app) DO UPDATE SET users = EXCLUDED.users`, day, app, users)
	if err != nil {
		t.Fatal(err)
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// server starts an httptest server of b's store with cfg.
func (b *bundle) server(t testing.TB, cfg report.ServerConfig) (*report.Server, *httptest.Server) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	srv, err := report.NewServer(b.store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		ts.Close()
		if err := srv.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	return srv, ts
}

// listedQueues is the Redis of the servers of tests that list every
// asynq queue (asynqmon's /queues/api/queues, and its page that asks for
// it): a database of the test Redis in which no test makes queues. In
// database 0 the queues of other packages' tests, made and deleted while
// they run, can vanish between asynqmon's listing and its look at each
// one, and it answers 500 (seen in CI: a jobs test's queue, in TestAuth).
var listedQueues = asynq.RedisClientOpt{Addr: redistest.Addr(), DB: 15}

// listedQueue is the one queue of listedQueues, made by TestMain with a
// reminder task due in an hour, so that the queue pages and their API have
// a queue to list, as an operator's have the reminder queue.
const listedQueue = "report-test-reminders"

func makeListedQueue() error {
	client := asynq.NewClient(listedQueues)
	defer client.Close()
	_, err := client.Enqueue(asynq.NewTask("reminder", []byte(`{}`)), asynq.Queue(listedQueue),
		asynq.TaskID("listed"), asynq.ProcessIn(time.Hour))
	if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
		return fmt.Errorf("make the queue %s to list: %w", listedQueue, err)
	}
	return nil
}

// deleteListedQueue deletes every key of listedQueue and its name from
// asynq's list of queues (as redistest.DeleteQueue does).
func deleteListedQueue() error {
	rdb := listedQueues.MakeRedisClient().(*redis.Client)
	defer rdb.Close()
	ctx := context.Background()
	ks, err := redistest.Keys(ctx, rdb, keys.AsynqQueue(listedQueue))
	if err != nil {
		return err
	}
	if len(ks) > 0 {
		if err := rdb.Del(ctx, ks...).Err(); err != nil {
			return err
		}
	}
	return rdb.SRem(ctx, keys.AsynqQueues, listedQueue).Err()
}

// send sends a request without a body, with optional headers as name,
// value pairs ("Host" sets the request's host), and returns the status,
// the headers and the body of the answer.
func send(t testing.TB, method, url string, header ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i] == "Host" {
			req.Host = header[i+1]
			continue
		}
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, res.Header, string(body)
}

// get sends a GET with optional headers and returns the status, headers
// and body.
func get(t testing.TB, url string, header ...string) (int, http.Header, string) {
	t.Helper()
	return send(t, http.MethodGet, url, header...)
}

// getJSON GETs url, wants 200 and decodes the body into v.
func getJSON(t testing.TB, url string, v any, header ...string) {
	t.Helper()
	code, _, body := get(t, url, header...)
	if code != http.StatusOK {
		t.Fatalf("GET %s = %d %s", url, code, body)
	}
	if err := json.NewDecoder(strings.NewReader(body)).Decode(v); err != nil {
		t.Fatalf("GET %s: decode: %v\n%s", url, err, body)
	}
}

// values returns the values of a series group's points.
func values(g report.Group) []int64 {
	out := make([]int64, len(g.Points))
	for i, p := range g.Points {
		out[i] = p.Value
	}
	return out
}

// group returns the group of s with key, or fails.
func group(t testing.TB, s *report.Series, key string) report.Group {
	t.Helper()
	for _, g := range s.Groups {
		if g.Key == key {
			return g
		}
	}
	t.Fatalf("series has no group %q: %+v", key, s.Groups)
	return report.Group{}
}
