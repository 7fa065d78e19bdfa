package e2e_test

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/nudgehq/nudge/internal/buildtest"
	"github.com/nudgehq/nudge/internal/settingsdoc"
)

// The commands that take a command of their own, and those of them with
// flags: each is a section of docs/settings.md, and each is named in its
// command's usage.
var subcommands = map[string][]string{
	"deadletter": {"list", "show", "replay", "drop"},
	"migrate":    {"", "up", "down"},
	"report":     {"serve", "print", "effectiveness", "sessions revoke-all", "sessions sign-in-link"},
}

// docs/settings.md lists exactly the settings each command's -h prints:
// every flag, its environment variable, default and meaning. The table is
// checked against what a person reads, so it cannot drift from it.
func TestSettingsDoc(t *testing.T) {
	t.Parallel()
	path, err := settingsdoc.Path()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := settingsdoc.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	var checked []string
	for _, name := range commandNames(t) {
		subs, ok := subcommands[name]
		if !ok {
			subs = []string{""}
		}
		for _, sub := range subs {
			command := strings.TrimSpace(name + " " + sub)
			checked = append(checked, command)
			t.Run(command, func(t *testing.T) {
				t.Parallel()
				bin := buildtest.Command(t, "../cmd/"+name)
				if sub != "" {
					// The command's usage names the subcommand.
					out, _ := exec.Command(bin, "-h").CombinedOutput()
					if !strings.Contains(string(out), command) {
						t.Errorf("%s -h does not name %q:\n%s", name, command, out)
					}
				}
				cmd := exec.Command(bin, append(strings.Fields(sub), "-h")...)
				cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("%s -h: %v\n%s", command, err, out)
				}
				got, err := settingsdoc.Help(command, string(out))
				if err != nil {
					t.Fatal(err)
				}
				if len(got) == 0 {
					t.Fatalf("%s -h printed no settings:\n%s", command, out)
				}
				for _, d := range settingsdoc.Diff(command, got, doc) {
					t.Error(d)
				}
			})
		}
	}
	// No section for a command that does not exist.
	for _, r := range doc {
		if !slices.Contains(checked, r.Command) {
			t.Errorf("docs/settings.md: there is no command %q; remove its rows", r.Command)
		}
	}
}

// commandNames returns the names of the directories under cmd/.
func commandNames(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("../cmd")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	return names
}
