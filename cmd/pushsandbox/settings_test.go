package main

import (
	"context"
	"flag"
	"io"
	"testing"

	"github.com/nudgehq/nudge/internal/settingsdoc"
)

// docs/settings.md lists exactly this command's flags. Not parallel: it
// sets onFlags.
func TestSettingsDoc(t *testing.T) {
	var fs *flag.FlagSet
	onFlags = func(f *flag.FlagSet) { fs = f }
	defer func() { onFlags = nil }()
	if err := run(context.Background(), []string{"-h"}, func(string) string { return "" }, io.Discard); err != nil {
		t.Fatal(err)
	}
	settingsdoc.Check(t, "pushsandbox", fs, envName)
}
