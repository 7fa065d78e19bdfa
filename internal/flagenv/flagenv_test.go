package flagenv_test

import (
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/nudgehq/nudge/internal/flagenv"
)

func TestParse(t *testing.T) {
	t.Parallel()
	env := map[string]string{"NUDGE_REDIS_URL": "redis://env:6379", "NUDGE_CLAIM_IDLE": "5s", "NUDGE_BATCH": "9"}
	fs := flagenv.NewFlagSet("x", "x: a command", flagenv.EnvName)
	url := fs.String("redis-url", "redis://default", "")
	idle := fs.Duration("claim-idle", time.Second, "")
	batch := fs.Int("batch", 1, "")
	if err := fs.ParseEnv([]string{"-batch", "3"}, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if *url != "redis://env:6379" || *idle != 5*time.Second {
		t.Errorf("env not applied: %s %s", *url, *idle)
	}
	if *batch != 3 {
		t.Errorf("the command line must win over the environment: batch %d", *batch)
	}
}

func TestParseNamesTheBadVariable(t *testing.T) {
	t.Parallel()
	fs := flagenv.NewFlagSet("x", "x: a command", flagenv.EnvName)
	fs.SetOutput(io.Discard)
	fs.Duration("claim-idle", time.Second, "")
	err := fs.ParseEnv(nil, func(k string) string {
		if k == "NUDGE_CLAIM_IDLE" {
			return "soon"
		}
		return ""
	})
	if err == nil || !strings.Contains(err.Error(), "NUDGE_CLAIM_IDLE") {
		t.Errorf("error %v does not name NUDGE_CLAIM_IDLE", err)
	}
}

// A command that reads only some flags from the environment says so in
// its settings, and ignores the other variables: the flag set parses and
// prints with the one naming function it was made with.
func TestOnly(t *testing.T) {
	t.Parallel()
	env := map[string]string{"NUDGE_PREFIX": "chat", "NUDGE_APP": "other-program"}
	fs := flagenv.NewFlagSet("report print", "report print: a series", flagenv.Only("prefix"))
	prefix := fs.String("prefix", "nudge", "key prefix")
	app := fs.String("app", "", "only this app")
	if err := fs.ParseEnv(nil, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if *prefix != "chat" || *app != "" {
		t.Errorf("prefix %q (want chat, from NUDGE_PREFIX), app %q (want none: -app reads no variable)", *prefix, *app)
	}
	var out strings.Builder
	fs.SetOutput(&out)
	if err := fs.ParseEnv([]string{"-h"}, func(string) string { return "" }); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v, want flag.ErrHelp", err)
	}
	want := `report print: a series

Settings (flag, environment variable, default):
  -app  (default "")
      only this app
  -prefix  (NUDGE_PREFIX, default "nudge")
      key prefix
`
	if out.String() != want {
		t.Errorf("-h printed:\n%s\nwant:\n%s", out.String(), want)
	}
}
