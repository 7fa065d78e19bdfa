package validate

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// The parts of Grafana's dashboard JSON model the checks read.
type dashboard struct {
	Title         string  `json:"title"`
	UID           string  `json:"uid"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasource     `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *datasource `json:"datasource"`
	GridPos    struct{ H, W, X, Y int }
	Targets    []struct {
		RefID        string      `json:"refId"`
		Expr         string      `json:"expr"`
		LegendFormat string      `json:"legendFormat"`
		Datasource   *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

var (
	legendLabel = regexp.MustCompile(`\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}`)
	labelValues = regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$`)
)

func TestGrafanaDashboard(t *testing.T) {
	t.Parallel()
	raw := readFile(t, filepath.Join(deployDir(t), "grafana", "nudge.json"))
	var d dashboard
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("nudge.json does not parse: %v", err)
	}
	if d.Title == "" || d.UID == "" || d.SchemaVersion == 0 {
		t.Errorf("title %q, uid %q, schemaVersion %d: all are needed for a stable import", d.Title, d.UID, d.SchemaVersion)
	}

	// The data source is a variable, so the dashboard imports into any
	// Grafana: no panel names a data source of its own.
	dsVar := ""
	for _, v := range d.Templating.List {
		if v.Type == "datasource" {
			var q string
			_ = json.Unmarshal(v.Query, &q)
			if q == "prometheus" {
				dsVar = v.Name
			}
		}
	}
	if dsVar == "" {
		t.Fatal("no Prometheus data source variable in templating")
	}
	wantDS := map[string]bool{"${" + dsVar + "}": true, "$" + dsVar: true}
	checkDS := func(where string, ds *datasource) {
		if ds == nil || ds.Type != "prometheus" || !wantDS[ds.UID] {
			t.Errorf("%s: data source %+v, want {prometheus ${%s}}", where, ds, dsVar)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		checkDS("variable "+v.Name, v.Datasource)
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			_ = json.Unmarshal(v.Query, &q.Query)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(metric, label)", v.Name, q.Query)
			continue
		}
		if ls, ok := metricLabels(m[1]); !ok || !ls[m[2]] {
			t.Errorf("variable %s: %s has no label %s (or is not a known metric)", v.Name, m[1], m[2])
		}
	}

	var all []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			all = append(all, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)

	ids := map[int]string{}
	used := map[string]bool{}
	queries := 0
	for _, p := range all {
		where := "panel " + p.Title
		if prev, ok := ids[p.ID]; ok || p.ID == 0 {
			t.Errorf("%s: id %d is not unique (also %q)", where, p.ID, prev)
		}
		ids[p.ID] = p.Title
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("%s: gridPos %+v outside the 24-column grid", where, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		checkDS(where, p.Datasource)
		if len(p.Targets) == 0 {
			t.Errorf("%s: no query", where)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			queries++
			if refs[tg.RefID] {
				t.Errorf("%s: refId %s twice", where, tg.RefID)
			}
			refs[tg.RefID] = true
			checkDS(where+" query "+tg.RefID, tg.Datasource)
			v, err := parsePromQL(withGrafanaVars(tg.Expr))
			if err != nil {
				t.Errorf("%s query %s: %v\n    %s", where, tg.RefID, err, tg.Expr)
				continue
			}
			for _, m := range v.metrics {
				used[strings.TrimSuffix(m, "_bucket")] = true
			}
			for _, l := range legendLabel.FindAllStringSubmatch(tg.LegendFormat, -1) {
				if !v.labels[l[1]] {
					t.Errorf("%s query %s: legend {{%s}} is not a label of the result (%s)", where, tg.RefID, l[1], tg.Expr)
				}
			}
		}
	}

	// Every metric of the contract is on the dashboard.
	var missing []string
	for m := range metricContract {
		if !used[m] {
			missing = append(missing, m)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("metrics of the contract not on the dashboard: %v", missing)
	}
	t.Logf("%d panels, %d queries, %d metrics", len(all), queries, len(used))
}

func TestPromQLParser(t *testing.T) {
	t.Parallel()
	good := []string{
		`sum by (shard) (rate(nudge_ingest_entries_read_total{namespace=~"$namespace"}[$__rate_interval]))`,
		`histogram_quantile(0.99, sum by (platform, le) (rate(nudge_push_duration_seconds_bucket[5m])))`,
		`time() - max(nudge_flush_last_success_timestamp_seconds)`,
		`sum(rate(nudge_push_total{outcome="delivered"}[5m])) by (platform) / sum by (platform) (rate(nudge_push_total[5m]))`,
		`sum without (instance, pod) (asynq_queue_size) > bool 0`,
	}
	for _, e := range good {
		if _, err := parsePromQL(withGrafanaVars(e)); err != nil {
			t.Errorf("%s: %v", e, err)
		}
	}
	bad := map[string]string{
		`sum(rate(nudge_ingest_entries_read_totl[5m]))`:                                "not in the metric contract",
		`sum by (reason) (rate(nudge_ingest_entries_read_total[5m]))`:                  "has label \"reason\"",
		`histogram_quantile(0.99, sum(rate(nudge_flush_duration_seconds_bucket[5m])))`: "no le label",
		`rate(nudge_flush_duration_seconds[5m])`:                                       "not in the metric contract",
		`sum(rate(nudge_push_total{platfrom="fcm"}[5m]))`:                              "no label \"platfrom\"",
		`sum(rate(nudge_push_total[5m])`:                                               "expected",
		`sum(rate(nudge_push_total[5 minutes]))`:                                       "bad range",
		`sum(rated(nudge_push_total[5m]))`:                                             "unknown function",
	}
	for e, want := range bad {
		_, err := parsePromQL(withGrafanaVars(e))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one containing %q", e, err, want)
		}
	}
}
