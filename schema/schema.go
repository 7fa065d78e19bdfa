// Package schema holds Nudge's storage contracts: the PostgreSQL schema,
// as versioned SQL migrations embedded in the binary, and the migrator that
// applies them.
//
// Migrations live in migrations/ as numbered pairs
// (0001_counters.up.sql, 0001_counters.down.sql). Each is applied in its own
// transaction and recorded in the schema_migrations table; a session-level
// advisory lock held for the whole run makes concurrent runs (several
// replicas starting with -migrate) safe. A migration that cannot run in a
// transaction (CREATE INDEX CONCURRENTLY) does not fit this model: split the
// work or run it by hand.
//
// README.md beside this file describes every table and the read-only role
// for reports.
package schema

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migration is one schema change and its inverse.
type Migration struct {
	// Version orders migrations: 1 for 0001_counters.
	Version int
	// Name is the file name's middle part: counters for 0001_counters.
	Name string
	// Up applies the change; Down reverts it. Both are SQL scripts of one or
	// more statements, run inside one transaction.
	Up, Down string
}

// Errors of the migrator.
var (
	// ErrBadMigrations means the embedded migration files are inconsistent:
	// a bad file name, a duplicate version, or an up without its down.
	ErrBadMigrations = errors.New("schema: bad migration files")
	// ErrUnknownVersion means the database has a migration applied that this
	// binary does not know (it is older than the database), so it cannot be
	// reverted from here.
	ErrUnknownVersion = errors.New("schema: applied migration unknown to this binary")
)

var migrationName = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.(up|down)\.sql$`)

// known holds the embedded migrations in version order, or the error that
// made them unusable.
var known, knownErr = load(migrationFiles)

// Migrations returns every embedded migration in version order.
func Migrations() ([]Migration, error) {
	if knownErr != nil {
		return nil, knownErr
	}
	return slices.Clone(known), nil
}

func load(fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, "migrations")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadMigrations, err)
	}
	byVersion := map[int]*Migration{}
	for _, e := range entries {
		m := migrationName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("%w: %s is not NNNN_name.up.sql or NNNN_name.down.sql", ErrBadMigrations, e.Name())
		}
		version, _ := strconv.Atoi(m[1])
		if version == 0 {
			return nil, fmt.Errorf("%w: %s: versions start at 0001", ErrBadMigrations, e.Name())
		}
		body, err := fs.ReadFile(fsys, "migrations/"+e.Name())
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadMigrations, err)
		}
		mig := byVersion[version]
		if mig == nil {
			mig = &Migration{Version: version, Name: m[2]}
			byVersion[version] = mig
		}
		if mig.Name != m[2] {
			return nil, fmt.Errorf("%w: version %04d has two names, %s and %s", ErrBadMigrations, version, mig.Name, m[2])
		}
		text := &mig.Up
		if m[3] == "down" {
			text = &mig.Down
		}
		if *text != "" {
			return nil, fmt.Errorf("%w: %s twice", ErrBadMigrations, e.Name())
		}
		*text = string(body)
	}
	out := make([]Migration, 0, len(byVersion))
	for _, m := range byVersion {
		if m.Up == "" || m.Down == "" {
			return nil, fmt.Errorf("%w: %04d_%s needs a non-empty .up.sql and .down.sql", ErrBadMigrations, m.Version, m.Name)
		}
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b Migration) int { return a.Version - b.Version })
	return out, nil
}
