package e2e_test

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/nudgehq/nudge/internal/buildtest"
)

func TestMain(m *testing.M) { buildtest.Main(m) }

// Every command answers -h with its settings and exit status 0, as a
// person typing it expects, and never with an error; and a flag that does
// not exist with exit status 2 and a message naming it (cli.ExitCode).
func TestEveryCommandHelp(t *testing.T) {
	t.Parallel()
	for _, name := range commandNames(t) {
		t.Run(name, func(t *testing.T) {
			bin := buildtest.Command(t, "../cmd/"+name)
			cmd := exec.Command(bin, "-h")
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("%s -h: %v\n%s", name, err, out)
			}
			if s := string(out); strings.Contains(s, "help requested") || !strings.Contains(s, "-") {
				t.Errorf("%s -h printed:\n%s", name, s)
			}
			// A misspelt flag is a usage error: exit status 2, and the
			// message names the flag.
			cmd = exec.Command(bin, "-no-such-flag")
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
			out, err = cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "no-such-flag") {
				t.Errorf("%s -no-such-flag: %v, want exit status 2 naming the flag:\n%s", name, err, out)
			}
		})
	}
}
