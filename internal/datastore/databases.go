package datastore

import (
	"context"
	"fmt"
	"net/url"

	"github.com/jackc/pgx/v5"
)

// The tools that run Nudge on a machine of their own (tests, bench, chaos,
// demo) create a database for the run on a PostgreSQL server, named by
// its server's URL (adminURL, the maintenance database "postgres" say),
// and drop it at the end. The services never create databases.

// CreateDatabase creates the database name on the server of adminURL and
// returns its URL: adminURL with the database's name as its path.
func CreateDatabase(ctx context.Context, adminURL, name string) (string, error) {
	u, err := url.Parse(adminURL)
	if err != nil {
		return "", fmt.Errorf("database URL: %w", err)
	}
	if err := onServer(ctx, adminURL, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize())
		return err
	}); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	u.Path = "/" + name
	return u.String(), nil
}

// EnsureDatabase creates the database dbURL names, on its server's
// maintenance database "postgres", unless it exists.
func EnsureDatabase(ctx context.Context, dbURL string) error {
	u, err := url.Parse(dbURL)
	if err != nil {
		return fmt.Errorf("database URL: %w", err)
	}
	name := u.Path[min(1, len(u.Path)):]
	u.Path = "/postgres"
	return onServer(ctx, u.String(), func(c *pgx.Conn) error {
		var exists bool
		if err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil || exists {
			return err
		}
		if _, err := c.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
			return fmt.Errorf("create database %s: %w", name, err)
		}
		return nil
	})
}

// DropDatabase drops the database name on the server of adminURL, if it
// exists, closing the connections still open to it.
func DropDatabase(ctx context.Context, adminURL, name string) error {
	return onServer(ctx, adminURL, func(c *pgx.Conn) error {
		_, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)")
		return err
	})
}

// onServer runs f on a connection to the database of dbURL.
func onServer(ctx context.Context, dbURL string, f func(*pgx.Conn) error) error {
	c, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", err)
	}
	defer c.Close(context.Background())
	return f(c)
}
