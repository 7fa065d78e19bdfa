package buildtest

import (
	"os/exec"
	"strings"
	"testing"
)

// Modules the module graph still names through old requirements of
// dependencies (asynq/x's go.mod needs go-redis v8; an old
// prometheus/common needs gogo/protobuf v1.1.1, CVE-2021-3121, fixed in
// 1.3.2), and that no command may link: the commands' packages are checked.
var mustNotLink = []string{"github.com/gogo/protobuf", "github.com/go-redis/redis/v8"}

func TestCommandsLinkNoKnownBadModule(t *testing.T) {
	if testing.Short() {
		t.Skip("lists the commands' dependencies")
	}
	t.Parallel()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{.Path}}{{end}}", "../../cmd/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	linked := map[string]bool{}
	for _, m := range strings.Fields(string(out)) {
		linked[m] = true
	}
	if !linked["github.com/redis/go-redis/v9"] {
		t.Fatalf("go list named no go-redis v9 among %d modules: the listing is wrong", len(linked))
	}
	for _, m := range mustNotLink {
		if linked[m] {
			t.Errorf("a command links %s", m)
		}
	}
}
