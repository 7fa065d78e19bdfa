package flush_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/flush"
	"github.com/nudgehq/nudge/internal/pgtest"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/schema"
)

// flusherGrants returns the statements deploy/README.md gives the
// flusher's role, nudge_flusher, in database nudge.
func flusherGrants(t *testing.T) []string {
	t.Helper()
	doc, err := os.ReadFile("../deploy/README.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(doc), "\n") {
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "GRANT ") && strings.HasSuffix(line, "TO nudge_flusher;") {
			out = append(out, line)
		}
	}
	if len(out) == 0 {
		t.Fatal("deploy/README.md grants nudge_flusher nothing")
	}
	return out
}

// asRole returns url with another user (the test server trusts loopback).
func asRole(t *testing.T, dbURL, role string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	return u.String()
}

// The flusher runs under exactly the grants deploy/README.md gives it, in a
// database whose schema another role (the migrating one) owns: it flushes a
// minute of a month that has no partition yet (the partition function
// creates it with its owner's rights), and it can change nothing else.
func TestFlusherRunsWithTheDocumentedGrants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	admin := pgtest.Admin(t)
	var b [4]byte
	_, _ = rand.Read(b[:])
	owner, flusher := "nudge_owner_"+hex.EncodeToString(b[:]), "nudge_flusher_"+hex.EncodeToString(b[:])
	for _, r := range []string{owner, flusher} {
		if _, err := admin.Exec(ctx, "CREATE ROLE "+r+" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"); err != nil {
			t.Fatal(err)
		}
	}
	// Runs after the database is dropped (cleanups run last in, first out).
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), pgtest.AdminURL())
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		for _, r := range []string{flusher, owner} {
			_, _ = c.Exec(context.Background(), "DROP ROLE IF EXISTS "+r)
		}
	})
	dbURL := pgtest.NewDatabase(t)
	dbName := strings.TrimPrefix(must(url.Parse(dbURL)).Path, "/")
	if _, err := admin.Exec(ctx, "ALTER DATABASE "+dbName+" OWNER TO "+owner); err != nil {
		t.Fatal(err)
	}

	// The owner migrates, and grants the flusher what the docs say.
	ownerDB, err := pgxpool.New(ctx, asRole(t, dbURL, owner))
	if err != nil {
		t.Fatal(err)
	}
	defer ownerDB.Close()
	if _, err := ownerDB.Exec(ctx, "ALTER SCHEMA public OWNER TO "+owner); err != nil {
		// PostgreSQL 15: public belongs to pg_database_owner, the owner
		// already.
		t.Logf("public schema: %v", err)
	}
	if _, err := schema.Up(ctx, ownerDB); err != nil {
		t.Fatal(err)
	}
	role := regexp.MustCompile(`\bnudge_flusher\b`)
	db := regexp.MustCompile(`\bDATABASE nudge\b`)
	for _, g := range flusherGrants(t) {
		g = db.ReplaceAllString(role.ReplaceAllString(g, flusher), "DATABASE "+dbName)
		if _, err := ownerDB.Exec(ctx, g); err != nil {
			t.Fatalf("%s: %v", g, err)
		}
	}

	// The flusher flushes a minute of May 2031: no partition yet.
	rdb, prefix := redistest.New(t)
	ks := keys.New(prefix, 2)
	at := time.Date(2031, 5, 1, 0, 0, 30, 0, time.UTC)
	if err := counters.Add(ctx, rdb, ks, 1, at, map[counters.Dims]int64{{Metric: counters.MessagesSent, App: "chat"}: 7}); err != nil {
		t.Fatal(err)
	}
	flusherDB, err := pgxpool.New(ctx, asRole(t, dbURL, flusher))
	if err != nil {
		t.Fatal(err)
	}
	defer flusherDB.Close()
	f, err := flush.New(rdb, flusherDB, flush.Config{Keyspace: ks, Grace: time.Second,
		Now: func() time.Time { return at.Add(3 * time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.FlushOnce(ctx); err != nil {
		t.Fatalf("flush as %s: %v", flusher, err)
	}
	var n int64
	var partOwner string
	if err := ownerDB.QueryRow(ctx, "SELECT sum(value) FROM counters_minute WHERE bucket = $1", at.Truncate(time.Minute)).Scan(&n); err != nil || n != 7 {
		t.Errorf("counters_minute holds %d for the minute (%v), want 7", n, err)
	}
	if err := ownerDB.QueryRow(ctx, "SELECT tableowner FROM pg_tables WHERE tablename = 'counters_minute_203105'").Scan(&partOwner); err != nil || partOwner != owner {
		t.Errorf("partition counters_minute_203105 owned by %q (%v), want %s", partOwner, err, owner)
	}

	// And nothing more.
	for _, stmt := range []string{
		"CREATE TABLE evil (x int)",
		"DELETE FROM counters_minute",
		"TRUNCATE counters_day",
		"DROP TABLE counters_minute_203105",
		"CREATE TABLE counters_minute_203107 PARTITION OF counters_minute FOR VALUES FROM ('2031-07-01') TO ('2031-08-01')",
		"SELECT token FROM devices",
		"UPDATE schema_migrations SET version = 0",
	} {
		if _, err := flusherDB.Exec(ctx, stmt); err == nil {
			t.Errorf("the flusher's role may: %s", stmt)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
