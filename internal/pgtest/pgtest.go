// Package pgtest gives tests a real, empty PostgreSQL database of their own.
//
// Tests connect to the server at NUDGE_TEST_DATABASE_URL (default
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable), create a
// database with a random name and drop it when the test ends.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/schema"
)

// AdminURL is the connection string of the server's maintenance database.
func AdminURL() string {
	if u := os.Getenv("NUDGE_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// Admin returns a connection to the server's maintenance database, closed
// at the end of the test: for a test that creates roles, say.
func Admin(t testing.TB) *pgx.Conn {
	t.Helper()
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, AdminURL())
	if err != nil {
		t.Fatalf("pgtest: no PostgreSQL at %s (start it with scripts/services.sh): %v", AdminURL(), err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// NewDatabase creates an empty database and returns its connection string.
// The database is dropped at the end of the test.
func NewDatabase(t testing.TB) string {
	t.Helper()
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "nudge_test_" + hex.EncodeToString(b[:])
	dbURL, err := datastore.CreateDatabase(ctx, AdminURL(), name)
	if err != nil {
		t.Fatalf("pgtest: %v (is PostgreSQL at %s? scripts/services.sh starts it)", err, AdminURL())
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := datastore.DropDatabase(ctx, AdminURL(), name); err != nil {
			t.Logf("pgtest: drop %s: %v", name, err)
		}
	})
	return dbURL
}

// NewPool creates an empty database and returns a pool connected to it. The
// pool is closed and the database dropped at the end of the test.
func NewPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	return pool(t, NewDatabase(t))
}

// NewMigrated creates a database with Nudge's schema applied and returns a
// pool connected to it and its URL (for processes a test starts). The pool
// is closed and the database dropped at the end of the test.
func NewMigrated(t testing.TB) (*pgxpool.Pool, string) {
	t.Helper()
	dbURL := NewDatabase(t)
	p := pool(t, dbURL)
	if _, err := schema.Up(context.Background(), p); err != nil {
		t.Fatalf("pgtest: migrate: %v", err)
	}
	return p, dbURL
}

func pool(t testing.TB, dbURL string) *pgxpool.Pool {
	t.Helper()
	p, err := pgxpool.New(context.Background(), dbURL)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

func skipShort(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("pgtest: needs PostgreSQL (go test -short runs only what needs no service)")
	}
}
