package main

import (
	"context"
	"flag"
	"io"
	"strings"
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
	settingsdoc.Check(t, "pushsandbox", fs, func(name string) string {
		switch name {
		case "fcm-addr", "apns-addr", "creds-dir":
			return "PUSHSANDBOX_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		}
		return ""
	})
}
