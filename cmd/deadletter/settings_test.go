package main

import (
	"testing"

	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/internal/settingsdoc"
)

// connEnv names the variable of a connection flag; the others have none.
func connEnv(name string) string {
	switch name {
	case "redis-url", "redis-cluster", "redis-ca-file", "prefix", "shards":
		return flagenv.EnvName(name)
	}
	return ""
}

// docs/settings.md lists exactly this command's flags.
func TestSettingsDoc(t *testing.T) {
	t.Parallel()
	for _, cmd := range []string{"list", "show", "replay", "drop"} {
		settingsdoc.Check(t, "deadletter "+cmd, flags(cmd, &options{}), connEnv)
	}
}
