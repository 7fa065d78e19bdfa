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
	settingsdoc.Check(t, "report serve", serveFlags(&connFlags{}, &serveOptions{}), flagenv.EnvName)
	settingsdoc.Check(t, "report print", printFlags(&connFlags{}, &printOptions{}), printEnv)
	settingsdoc.Check(t, "report effectiveness", effectFlags(&connFlags{}, &effectOptions{}), printEnv)
	var prefix string
	settingsdoc.Check(t, "report sessions revoke-all", revokeAllFlags(&datastore.Redis{}, &prefix), flagenv.EnvName)
	settingsdoc.Check(t, "report sessions sign-in-link", signInLinkFlags(&datastore.Redis{}, &prefix, &linkOptions{}), printEnv)
}
