package main

import (
	"testing"

	"github.com/nudgehq/nudge/internal/settingsdoc"
)

// docs/settings.md lists exactly this command's flags.
func TestSettingsDoc(t *testing.T) {
	t.Parallel()
	settingsdoc.Check(t, "demo", flags(&options{}), demoEnvName)
}
