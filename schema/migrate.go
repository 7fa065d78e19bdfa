package schema

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Direction says which way Migrate moves.
type Direction string

// Directions of Migrate.
const (
	// DirectionUp applies pending migrations in version order.
	DirectionUp Direction = "up"
	// DirectionDown reverts applied migrations, newest first.
	DirectionDown Direction = "down"
)

// lockKey is the session advisory lock every migrator run holds: ASCII
// "nudgmigr". The partition function of 0001 locks another key.
const lockKey int64 = 7959378311827253106

// State is a migration and whether the database has it.
type State struct {
	Version int
	Name    string
	// Applied reports whether the database recorded the migration.
	Applied bool
	// AppliedAt is when it was applied; zero if pending.
	AppliedAt time.Time
	// Unknown reports a migration recorded in the database but not embedded
	// in this binary (the binary is older than the database).
	Unknown bool
}

// Up applies every pending migration and returns those it applied.
func Up(ctx context.Context, db *pgxpool.Pool) ([]Migration, error) {
	return Migrate(ctx, db, DirectionUp, 0)
}

// Down reverts the last steps applied migrations (1 if steps <= 0) and
// returns those it reverted.
func Down(ctx context.Context, db *pgxpool.Pool, steps int) ([]Migration, error) {
	return Migrate(ctx, db, DirectionDown, steps)
}

// Migrate moves the schema of db up or down. Up applies at most steps
// pending migrations, all of them if steps <= 0. Down reverts the last steps
// applied migrations, one if steps <= 0. Each migration runs in its own
// transaction with its row in schema_migrations, so a failure leaves the
// schema at the last migration that succeeded. Runs are serialized across
// processes by an advisory lock held on one connection for the whole run.
// It returns the migrations applied or reverted, in the order it ran them.
func Migrate(ctx context.Context, db *pgxpool.Pool, dir Direction, steps int) ([]Migration, error) {
	if knownErr != nil {
		return nil, knownErr
	}
	if dir != DirectionUp && dir != DirectionDown {
		return nil, fmt.Errorf("schema: migrate: unknown direction %q", dir)
	}
	pooled, err := db.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("schema: migrate: connect: %w", err)
	}
	// The connection leaves the pool: closing it is what releases the
	// session lock if anything below fails halfway, so a pooled connection
	// can never keep the lock after this returns.
	conn := pooled.Hijack()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(ctx)
	}()

	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lockKey); err != nil {
		return nil, fmt.Errorf("schema: migrate: lock: %w", err)
	}
	if err := createLog(ctx, conn); err != nil {
		return nil, err
	}
	applied, err := appliedVersions(ctx, conn)
	if err != nil {
		return nil, err
	}

	var done []Migration
	switch dir {
	case DirectionUp:
		for _, m := range known {
			if steps > 0 && len(done) == steps {
				break
			}
			if _, ok := applied[m.Version]; ok {
				continue
			}
			if err := apply(ctx, conn, m, DirectionUp); err != nil {
				return done, err
			}
			done = append(done, m)
		}
	case DirectionDown:
		if steps <= 0 {
			steps = 1
		}
		versions := make([]int, 0, len(applied))
		for v := range applied {
			versions = append(versions, v)
		}
		slices.Sort(versions)
		slices.Reverse(versions)
		for _, v := range versions[:min(steps, len(versions))] {
			i := slices.IndexFunc(known, func(m Migration) bool { return m.Version == v })
			if i < 0 {
				return done, fmt.Errorf("schema: revert %04d_%s: %w", v, applied[v].name, ErrUnknownVersion)
			}
			if err := apply(ctx, conn, known[i], DirectionDown); err != nil {
				return done, err
			}
			done = append(done, known[i])
		}
	}

	if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock($1)", lockKey); err != nil {
		return done, fmt.Errorf("schema: migrate: unlock: %w", err)
	}
	return done, nil
}

// Status lists every migration this binary knows, and any the database
// has applied that it does not know, in version order.
func Status(ctx context.Context, db *pgxpool.Pool) ([]State, error) {
	if knownErr != nil {
		return nil, knownErr
	}
	conn, err := db.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("schema: status: connect: %w", err)
	}
	defer conn.Release()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", "schema_migrations").Scan(&exists); err != nil {
		return nil, fmt.Errorf("schema: status: %w", err)
	}
	applied := map[int]appliedRow{}
	if exists {
		if applied, err = appliedVersions(ctx, conn.Conn()); err != nil {
			return nil, err
		}
	}
	out := make([]State, 0, len(known))
	for _, m := range known {
		s := State{Version: m.Version, Name: m.Name}
		if a, ok := applied[m.Version]; ok {
			s.Applied, s.AppliedAt = true, a.at
			delete(applied, m.Version)
		}
		out = append(out, s)
	}
	for v, a := range applied {
		out = append(out, State{Version: v, Name: a.name, Applied: true, AppliedAt: a.at, Unknown: true})
	}
	slices.SortFunc(out, func(a, b State) int { return a.Version - b.Version })
	return out, nil
}

func createLog(ctx context.Context, conn *pgx.Conn) error {
	// A constant statement: pgx sends it with the simple protocol, which is
	// fine as it carries no values.
	_, err := conn.Exec(ctx, `
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`)
	if err != nil {
		return fmt.Errorf("schema: create schema_migrations: %w", err)
	}
	return nil
}

type appliedRow struct {
	name string
	at   time.Time
}

func appliedVersions(ctx context.Context, conn *pgx.Conn) (map[int]appliedRow, error) {
	rows, err := conn.Query(ctx, "SELECT version, name, applied_at FROM schema_migrations WHERE version > $1", 0)
	if err != nil {
		return nil, fmt.Errorf("schema: read schema_migrations: %w", err)
	}
	defer rows.Close()
	out := map[int]appliedRow{}
	for rows.Next() {
		var (
			v int
			a appliedRow
		)
		if err := rows.Scan(&v, &a.name, &a.at); err != nil {
			return nil, fmt.Errorf("schema: read schema_migrations: %w", err)
		}
		out[v] = a
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("schema: read schema_migrations: %w", err)
	}
	return out, nil
}

// apply runs one migration's script and records it, in one transaction.
func apply(ctx context.Context, conn *pgx.Conn, m Migration, dir Direction) error {
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		script := m.Up
		if dir == DirectionDown {
			script = m.Down
		}
		// The script is embedded SQL of several statements and no values:
		// pgx runs it with the simple protocol, the only one that accepts
		// several statements.
		if _, err := tx.Exec(ctx, script); err != nil {
			return err
		}
		if dir == DirectionUp {
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.Version, m.Name)
			return err
		}
		_, err := tx.Exec(ctx, "DELETE FROM schema_migrations WHERE version = $1", m.Version)
		return err
	})
	if err != nil {
		return fmt.Errorf("schema: %s %04d_%s: %w", dir, m.Version, m.Name, err)
	}
	return nil
}
