package main

import (
	"testing"

	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/internal/settingsdoc"
)

// docs/settings.md lists exactly this command's flags.
func TestSettingsDoc(t *testing.T) {
	t.Parallel()
	settingsdoc.Check(t, "migrate", flags(&datastore.Postgres{}), flagenv.EnvName)
	var steps int
	settingsdoc.Check(t, "migrate up", subFlags("up", &steps), nil)
	settingsdoc.Check(t, "migrate down", subFlags("down", &steps), nil)
}
