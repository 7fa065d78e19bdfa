package ingest

import (
	"regexp"
	"strings"
	"testing"

	"github.com/nudgehq/nudge/report"
)

// apply.lua spells no metric name and no dead-letter reason itself: they
// come from Go, in the prelude, and each name of the prelude is used.
func TestApplyScriptNamesComeFromGo(t *testing.T) {
	t.Parallel()
	literals := map[string]bool{}
	for _, m := range regexp.MustCompile(`'([a-z_]+)'`).FindAllStringSubmatch(applySource, -1) {
		literals[m[1]] = true
	}
	for _, m := range report.Metrics() {
		if literals[m.Name] {
			t.Errorf("apply.lua spells the metric %q: add it to applyNames and use its local", m.Name)
		}
	}
	for _, r := range []string{string(ReasonApplyFailed), string(ReasonWrongShard), string(ReasonMaxDeliveries), string(ReasonNoEventField)} {
		if literals[r] {
			t.Errorf("apply.lua spells the reason %q: add it to applyNames and use its local", r)
		}
	}
	for _, n := range append(applyNames, struct{ local, value string }{"readBuckets", ""}) {
		if !regexp.MustCompile(`\b` + n.local + `\b`).MatchString(applySource) {
			t.Errorf("apply.lua does not use %s (%s): remove it from applyNames", n.local, n.value)
		}
	}
	if p := applyPrelude(); !strings.Contains(p, "local readBuckets = {30, ") {
		t.Errorf("prelude:\n%s", p)
	}
}
