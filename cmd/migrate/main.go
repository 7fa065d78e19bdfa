// Command migrate applies, reverts and lists Nudge's PostgreSQL migrations
// (package schema).
//
//	migrate [-database-url URL] up [-steps N]
//	migrate [-database-url URL] down [-steps N]
//	migrate [-database-url URL] status
//
// The database URL defaults to $NUDGE_DATABASE_URL.
package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/schema"
)

func main() {
	cli.Run("migrate", run)
}

const usage = `usage: migrate [flags] up [-steps N] | down [-steps N] | status

  up      apply pending migrations (all, or at most -steps)
  down    revert the last applied migrations (-steps, default 1)
  status  list every migration and whether it is applied

Run "migrate up -h" or "migrate down -h" for the flags of a command.

`

// flags returns the command's own flag set (before the subcommand).
func flags(pg *datastore.Postgres) *flagenv.FlagSet {
	fs := flagenv.NewFlagSet("migrate", "migrate: apply or revert the schema migrations", flagenv.EnvName)
	pg.Register(fs.FlagSet, "", "PostgreSQL to migrate (required)")
	return fs
}

// subFlags returns the flag set of a subcommand, nil for an unknown one.
// The subcommands' flags read no environment variable.
func subFlags(cmd string, steps *int) *flagenv.FlagSet {
	summary, ok := map[string]string{
		"up":     "migrate up: apply pending migrations",
		"down":   "migrate down: revert the last applied migrations",
		"status": "migrate status: list every migration and whether it is applied (no flags)",
	}[cmd]
	if !ok {
		return nil
	}
	sub := flagenv.NewFlagSet("migrate "+cmd, summary, flagenv.NoEnv)
	switch cmd {
	case "up":
		sub.IntVar(steps, "steps", 0, "apply at most N migrations (0: all)")
	case "down":
		sub.IntVar(steps, "steps", 1, "revert the last N migrations")
	case "status":
		sub.Usage = func() { fmt.Fprintln(sub.Output(), summary) }
	}
	return sub
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var pg datastore.Postgres
	fs := flags(&pg)
	fs.SetOutput(stdout)
	fs.Usage = func() {
		fmt.Fprint(stdout, usage)
		fs.PrintSettings(stdout)
	}
	if err := cli.Parse(fs, args, getenv, true); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return fmt.Errorf("%w: missing command", cli.ErrUsage)
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]

	steps := 0
	sub := subFlags(cmd, &steps)
	if sub == nil {
		fs.Usage()
		return fmt.Errorf("%w: unknown command %q", cli.ErrUsage, cmd)
	}
	sub.SetOutput(stdout)
	if err := cli.Parse(sub, rest, getenv, false); err != nil {
		return err
	}
	if steps < 0 {
		return fmt.Errorf("%w: -steps must not be negative", cli.ErrUsage)
	}
	if _, err := pg.Config(); err != nil {
		return cli.Usage(err)
	}
	db, err := pg.Pool(ctx, nil)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer db.Close()

	switch cmd {
	case "up", "down":
		dir, verb := schema.DirectionUp, "applied"
		if cmd == "down" {
			dir, verb = schema.DirectionDown, "reverted"
		}
		done, err := schema.Migrate(ctx, db, dir, steps)
		for _, m := range done {
			fmt.Fprintf(stdout, "%s %04d_%s\n", verb, m.Version, m.Name)
		}
		if err != nil {
			return err
		}
		if len(done) == 0 {
			fmt.Fprintln(stdout, "nothing to do")
		}
		return nil
	default:
		states, err := schema.Status(ctx, db)
		if err != nil {
			return err
		}
		return printStatus(stdout, states)
	}
}

func printStatus(w io.Writer, states []schema.State) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tNAME\tSTATUS\tAPPLIED AT")
	for _, s := range states {
		status, at := "pending", "-"
		if s.Applied {
			status, at = "applied", s.AppliedAt.UTC().Format(time.RFC3339)
		}
		if s.Unknown {
			status = "applied (unknown to this binary)"
		}
		fmt.Fprintf(tw, "%04d\t%s\t%s\t%s\n", s.Version, s.Name, status, at)
	}
	return tw.Flush()
}
