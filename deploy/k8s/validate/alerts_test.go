package validate

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// The alerting rules of deploy/prometheus/alerts.yaml: each parses, names
// only metrics (and labels) the binaries export, and says how bad it is and
// what to look at.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	var f struct {
		Groups []struct {
			Name  string `json:"name"`
			Rules []struct {
				Alert       string            `json:"alert"`
				Expr        string            `json:"expr"`
				For         string            `json:"for"`
				Labels      map[string]string `json:"labels"`
				Annotations map[string]string `json:"annotations"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.UnmarshalStrict(readFile(t, filepath.Join(deployDir(t), "prometheus", "alerts.yaml")), &f); err != nil {
		t.Fatalf("alerts.yaml: %v", err)
	}
	templateLabel := regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)
	seen := map[string]bool{}
	n := 0
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			n++
			where := "alert " + r.Alert
			if r.Alert == "" || seen[r.Alert] {
				t.Errorf("%s: empty or repeated name", where)
			}
			seen[r.Alert] = true
			v, err := parsePromQL(strings.TrimSpace(r.Expr))
			if err != nil {
				t.Errorf("%s: %v\n    %s", where, err, r.Expr)
				continue
			}
			if len(v.metrics) == 0 {
				t.Errorf("%s: the expression reads no metric", where)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", where, r.For, err)
				}
			}
			switch r.Labels["severity"] {
			case "page", "warning":
			default:
				t.Errorf("%s: severity %q, want page or warning", where, r.Labels["severity"])
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: a summary and a description are needed", where)
			}
			for _, a := range r.Annotations {
				for _, m := range templateLabel.FindAllStringSubmatch(a, -1) {
					if !v.labels[m[1]] {
						t.Errorf("%s: the annotation names $labels.%s, which the result does not have", where, m[1])
					}
				}
			}
		}
	}
	for _, want := range []string{"NudgeIngestLagging", "NudgeRemindersLate", "NudgeReminderTasksGivenUp"} {
		if !seen[want] {
			t.Errorf("no alert %s", want)
		}
	}
	t.Logf("%d rules", n)
}
