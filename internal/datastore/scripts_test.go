package datastore_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	_ "github.com/nudgehq/nudge/flush" // their scripts
	_ "github.com/nudgehq/nudge/ingest"
	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/redistest"
	_ "github.com/nudgehq/nudge/jobs"
)

// The commands of each component's scripts are found, and a user whose ACL
// lacks one of them is refused with its name; a user with all of them
// passes.
func TestCheckScripts(t *testing.T) {
	t.Parallel()
	admin, prefix := redistest.New(t)
	ctx := context.Background()
	for _, c := range []struct {
		component string
		want      []string
	}{
		{"ingest", []string{"HINCRBY", "PFADD", "SMISMEMBER", "XACK", "XADD"}},
		{"scheduler", []string{"HINCRBY", "SADD", "SMISMEMBER"}},
		{"worker", []string{"HINCRBY", "SADD", "SMISMEMBER", "SREM"}},
		{"flusher", []string{"PFMERGE", "RENAME"}},
	} {
		got := datastore.ScriptCommands(c.component)
		for _, w := range c.want {
			if !strings.Contains(" "+strings.Join(got, " ")+" ", " "+w+" ") {
				t.Errorf("%s scripts: %s not among %v", c.component, w, got)
			}
		}
	}

	user := "acl-" + prefix
	grant := func(cmds ...string) *redis.Client {
		t.Helper()
		args := []any{"ACL", "SETUSER", user, "reset", "on", ">pw", "~" + prefix + ":*", "-@all", "+eval", "+evalsha", "+ping"}
		for _, c := range cmds {
			args = append(args, "+"+strings.ToLower(c))
		}
		if err := admin.Do(ctx, args...).Err(); err != nil {
			t.Fatal(err)
		}
		c := redis.NewClient(&redis.Options{Addr: redistest.Addr(), Username: user, Password: "pw"})
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	t.Cleanup(func() { admin.Do(context.Background(), "ACL", "DELUSER", user) })
	all := datastore.ScriptCommands("ingest", "scheduler")
	var known []string // the words that are commands
	for _, c := range all {
		if admin.Do(ctx, "COMMAND", "INFO", c).Val().([]any)[0] != nil {
			known = append(known, c)
		}
	}
	key := prefix + ":{s0}:outbox"
	if err := datastore.CheckScripts(ctx, grant(known...), key, "ingest", "scheduler"); err != nil {
		t.Errorf("with every command: %v", err)
	}
	var without []string
	for _, c := range known {
		if c != "PFADD" {
			without = append(without, c)
		}
	}
	err := datastore.CheckScripts(ctx, grant(without...), key, "ingest", "scheduler")
	if err == nil || !strings.Contains(err.Error(), "+pfadd") || strings.Contains(err.Error(), "+hincrby") {
		t.Errorf("without PFADD: %v, want an error naming +pfadd only", err)
	}
	if denied, ok := errors.AsType[*datastore.DeniedError](err); !ok || !slices.Equal(denied.Commands, []string{"pfadd"}) {
		t.Errorf("without PFADD: %#v, want a DeniedError of pfadd", err)
	}
	// RequireScripts gives the same answer.
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := datastore.RequireScripts(ctx, grant(without...), log, key, "ingest"); err == nil {
		t.Error("RequireScripts let a user without PFADD through")
	}
	// A key outside the user's patterns is refused for every command.
	if err := datastore.CheckScripts(ctx, grant(known...), "other:{s0}:outbox", "ingest"); err == nil {
		t.Error("a key outside the user's patterns passed")
	}
}
