package validate

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode"
)

// A small PromQL parser for the subset dashboards use (selectors, ranges,
// functions, aggregations with by/without, binary operators with
// on/ignoring/group_*; no offsets or subqueries). Prometheus' own parser would cost this module
// ~80 more dependencies and a minute of cold build; this one is enough to
// reject syntax errors and, better, to check every metric, label matcher,
// grouping label and legend label against the metric contract below.

// metricContract: every metric the dashboard may query -> its labels
// (besides the target labels Prometheus adds). Histograms are queried
// through _bucket (with le), _sum and _count.
var metricContract = map[string]struct {
	labels    []string
	histogram bool
}{
	"nudge_ingest_entries_read_total":            {labels: []string{"shard"}},
	"nudge_ingest_events_applied_total":          {},
	"nudge_ingest_dead_lettered_total":           {labels: []string{"reason"}},
	"nudge_ingest_duplicates_total":              {},
	"nudge_ingest_batch_duration_seconds":        {histogram: true},
	"nudge_ingest_lag":                           {labels: []string{"shard"}},
	"nudge_ingest_pending":                       {labels: []string{"shard"}},
	"nudge_ingest_lag_seconds":                   {labels: []string{"shard"}},
	"nudge_ingest_trimmed_unread":                {labels: []string{"shard"}},
	"nudge_reminder_lateness_seconds":            {histogram: true},
	"nudge_worker_task_failures_total":           {labels: []string{"cause"}},
	"nudge_worker_tasks_archived_total":          {},
	"nudge_worker_apps_reloads_total":            {labels: []string{"result"}},
	"nudge_worker_template_errors_total":         {labels: []string{"app"}},
	"nudge_ingest_shards_owned":                  {},
	"nudge_reminders_total":                      {labels: []string{"outcome", "reason"}},
	"nudge_push_total":                           {labels: []string{"platform", "outcome", "reason"}},
	"nudge_push_duration_seconds":                {labels: []string{"platform"}, histogram: true},
	"nudge_tokens_removed_total":                 {labels: []string{"platform"}},
	"nudge_flush_duration_seconds":               {histogram: true},
	"nudge_flush_rows_total":                     {},
	"nudge_flush_last_success_timestamp_seconds": {},
	"nudge_flush_errors_total":                   {},
	"nudge_redis_errors_total":                   {labels: []string{"component"}},
	"nudge_postgres_errors_total":                {labels: []string{"component"}},
	// asynq's exporter (github.com/hibiken/asynq/x/metrics, registered by
	// the worker): the size of a queue has no state label; the breakdown by
	// state is asynq_tasks_enqueued_total, a gauge despite its name.
	"asynq_queue_size":            {labels: []string{"queue"}},
	"asynq_tasks_enqueued_total":  {labels: []string{"queue", "state"}},
	"asynq_tasks_processed_total": {labels: []string{"queue"}},
	"asynq_tasks_failed_total":    {labels: []string{"queue"}},
	"asynq_queue_latency_seconds": {labels: []string{"queue"}},
}

// targetLabels are added by Prometheus' Kubernetes service discovery and
// relabelling, so any series may carry them.
var targetLabels = []string{"namespace", "pod", "instance", "job", "container", "service", "endpoint", "node"}

// metricLabels returns the labels of a queryable series name, or false if
// the name is not in the contract.
func metricLabels(name string) (map[string]bool, bool) {
	base, suffix := name, ""
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if strings.HasSuffix(name, s) {
			if m, ok := metricContract[strings.TrimSuffix(name, s)]; ok && m.histogram {
				base, suffix = strings.TrimSuffix(name, s), s
			}
		}
	}
	m, ok := metricContract[base]
	if !ok || (m.histogram && suffix == "") {
		return nil, false
	}
	set := map[string]bool{}
	for _, l := range append(slices.Clone(m.labels), targetLabels...) {
		set[l] = true
	}
	if suffix == "_bucket" {
		set["le"] = true
	}
	return set, true
}

var (
	aggregations = []string{"sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "count_values", "group"}
	functions    = []string{"rate", "irate", "increase", "delta", "idelta", "deriv", "changes", "resets", "histogram_quantile",
		"time", "timestamp", "vector", "scalar", "abs", "ceil", "floor", "round", "clamp", "clamp_min", "clamp_max", "sort", "sort_desc",
		"absent", "absent_over_time", "avg_over_time", "min_over_time", "max_over_time", "sum_over_time", "count_over_time",
		"last_over_time", "quantile_over_time", "label_replace", "label_join"}
	binaryOps   = []string{"+", "-", "*", "/", "%", "^", "==", "!=", ">", "<", ">=", "<=", "and", "or", "unless"}
	durationRe  = regexp.MustCompile(`^([0-9]+(ms|s|m|h|d|w|y))+(:([0-9]+(ms|s|m|h|d|w|y))+)?$`)
	identRe     = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	grafanaVars = regexp.MustCompile(`\$\{?[a-zA-Z_][a-zA-Z0-9_]*(:[a-z]+)?\}?`)
)

// withGrafanaVars replaces Grafana's variables with values of their kind:
// $__rate_interval and friends in ranges, anything else in label values.
func withGrafanaVars(expr string) string {
	return grafanaVars.ReplaceAllStringFunc(expr, func(v string) string {
		if strings.Contains(v, "interval") || strings.Contains(v, "range") {
			return "5m"
		}
		return "x"
	})
}

type token struct {
	kind string // ident, number, string, duration, op, punct
	text string
}

func lex(s string) ([]token, error) {
	var ts []token
	for i := 0; i < len(s); {
		c := rune(s[i])
		switch {
		case unicode.IsSpace(c):
			i++
		case c == '"' || c == '\'':
			j := i + 1
			for j < len(s) && rune(s[j]) != c {
				if s[j] == '\\' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			ts = append(ts, token{"string", s[i+1 : j]})
			i = j + 1
		case c == '[':
			j := strings.IndexByte(s[i:], ']')
			if j < 0 {
				return nil, fmt.Errorf("unterminated range at %d", i)
			}
			d := strings.TrimSpace(s[i+1 : i+j])
			if !durationRe.MatchString(d) {
				return nil, fmt.Errorf("bad range [%s]", d)
			}
			ts = append(ts, token{"duration", d})
			i += j + 1
		case unicode.IsDigit(c) || (c == '.' && i+1 < len(s) && unicode.IsDigit(rune(s[i+1]))):
			j := i
			for j < len(s) && (unicode.IsDigit(rune(s[j])) || s[j] == '.' || s[j] == 'e' || s[j] == 'E') {
				j++
			}
			ts = append(ts, token{"number", s[i:j]})
			i = j
		case c == '_' || c == ':' || unicode.IsLetter(c):
			j := i
			for j < len(s) && (s[j] == '_' || s[j] == ':' || unicode.IsLetter(rune(s[j])) || unicode.IsDigit(rune(s[j]))) {
				j++
			}
			ts = append(ts, token{"ident", s[i:j]})
			i = j
		case strings.ContainsRune("(){},", c):
			ts = append(ts, token{"punct", string(c)})
			i++
		default:
			op := ""
			for _, o := range []string{"=~", "!~", "==", "!=", ">=", "<=", "=", ">", "<", "+", "-", "*", "/", "%", "^"} {
				if strings.HasPrefix(s[i:], o) {
					op = o
					break
				}
			}
			if op == "" {
				return nil, fmt.Errorf("unexpected %q at %d", c, i)
			}
			ts = append(ts, token{"op", op})
			i += len(op)
		}
	}
	return ts, nil
}

// value is what an expression yields: a scalar, or a vector with a known
// set of labels.
type value struct {
	scalar  bool
	labels  map[string]bool
	metrics []string
}

type parser struct {
	ts  []token
	pos int
}

// parsePromQL parses expr (Grafana variables already replaced) and checks it
// against metricContract.
func parsePromQL(expr string) (value, error) {
	ts, err := lex(expr)
	if err != nil {
		return value{}, err
	}
	p := &parser{ts: ts}
	v, err := p.expr(0)
	if err != nil {
		return value{}, err
	}
	if p.pos != len(p.ts) {
		return value{}, fmt.Errorf("unexpected %q after the expression", p.ts[p.pos].text)
	}
	return v, nil
}

func (p *parser) peek() token {
	if p.pos < len(p.ts) {
		return p.ts[p.pos]
	}
	return token{"eof", ""}
}

func (p *parser) next() token { t := p.peek(); p.pos++; return t }

func (p *parser) expect(text string) error {
	if t := p.next(); t.text != text {
		return fmt.Errorf("expected %q, got %q", text, t.text)
	}
	return nil
}

func precedence(op string) int {
	switch op {
	case "or":
		return 1
	case "and", "unless":
		return 2
	case "==", "!=", ">", "<", ">=", "<=":
		return 3
	case "+", "-":
		return 4
	case "*", "/", "%":
		return 5
	case "^":
		return 6
	}
	return 0
}

func (p *parser) expr(minPrec int) (value, error) {
	left, err := p.unary()
	if err != nil {
		return value{}, err
	}
	for {
		op := p.peek()
		if (op.kind != "op" && op.kind != "ident") || !slices.Contains(binaryOps, op.text) || precedence(op.text) < minPrec {
			return left, nil
		}
		p.next()
		if p.peek().text == "bool" {
			p.next()
		}
		for _, mod := range []string{"on", "ignoring", "group_left", "group_right"} {
			if p.peek().text == mod {
				p.next()
				if p.peek().text == "(" {
					if _, err := p.labelList(); err != nil {
						return value{}, err
					}
				}
			}
		}
		right, err := p.expr(precedence(op.text) + 1)
		if err != nil {
			return value{}, err
		}
		out := left
		if left.scalar {
			out = right
		}
		out.scalar = left.scalar && right.scalar
		out.metrics = append(slices.Clone(left.metrics), right.metrics...)
		left = out
	}
}

func (p *parser) labelList() ([]string, error) {
	if err := p.expect("("); err != nil {
		return nil, err
	}
	var ls []string
	for p.peek().text != ")" {
		t := p.next()
		if t.kind != "ident" || !identRe.MatchString(t.text) {
			return nil, fmt.Errorf("bad label %q", t.text)
		}
		ls = append(ls, t.text)
		if p.peek().text == "," {
			p.next()
		}
	}
	p.next()
	return ls, nil
}

func (p *parser) unary() (value, error) {
	t := p.peek()
	switch {
	case t.text == "-" || t.text == "+":
		p.next()
		return p.unary()
	case t.text == "(":
		p.next()
		v, err := p.expr(0)
		if err != nil {
			return value{}, err
		}
		return v, p.expect(")")
	case t.kind == "number":
		p.next()
		return value{scalar: true}, nil
	case t.kind == "string":
		p.next()
		return value{scalar: true}, nil
	case t.kind == "ident" && slices.Contains(aggregations, t.text):
		return p.aggregation()
	case t.kind == "ident" && p.pos+1 < len(p.ts) && p.ts[p.pos+1].text == "(":
		return p.call()
	case t.kind == "ident":
		return p.selector()
	}
	return value{}, fmt.Errorf("unexpected %q", t.text)
}

func (p *parser) aggregation() (value, error) {
	op := p.next().text
	var by, without []string
	clause := func() error {
		switch p.peek().text {
		case "by":
			p.next()
			ls, err := p.labelList()
			by = ls
			return err
		case "without":
			p.next()
			ls, err := p.labelList()
			without = ls
			return err
		}
		return nil
	}
	if err := clause(); err != nil {
		return value{}, err
	}
	if err := p.expect("("); err != nil {
		return value{}, err
	}
	if op == "topk" || op == "bottomk" || op == "quantile" || op == "count_values" {
		if _, err := p.expr(0); err != nil {
			return value{}, err
		}
		if err := p.expect(","); err != nil {
			return value{}, err
		}
	}
	inner, err := p.expr(0)
	if err != nil {
		return value{}, err
	}
	if err := p.expect(")"); err != nil {
		return value{}, err
	}
	if by == nil && without == nil {
		if err := clause(); err != nil {
			return value{}, err
		}
	}
	if inner.scalar {
		return value{}, fmt.Errorf("%s over a scalar", op)
	}
	out := value{labels: map[string]bool{}, metrics: inner.metrics}
	for _, l := range by {
		if !inner.labels[l] {
			return value{}, fmt.Errorf("%s by (%s): no series of %v has label %q", op, strings.Join(by, ", "), inner.metrics, l)
		}
		out.labels[l] = true
	}
	if without != nil {
		for l := range inner.labels {
			if !slices.Contains(without, l) {
				out.labels[l] = true
			}
		}
	}
	return out, nil
}

func (p *parser) call() (value, error) {
	name := p.next().text
	if !slices.Contains(functions, name) {
		return value{}, fmt.Errorf("unknown function %q", name)
	}
	p.next() // (
	var args []value
	for p.peek().text != ")" {
		v, err := p.expr(0)
		if err != nil {
			return value{}, err
		}
		args = append(args, v)
		if p.peek().text == "," {
			p.next()
		} else if p.peek().text != ")" {
			return value{}, fmt.Errorf("%s: expected , or ), got %q", name, p.peek().text)
		}
	}
	p.next()
	switch name {
	case "time":
		if len(args) != 0 {
			return value{}, fmt.Errorf("time() takes no argument")
		}
		return value{scalar: true}, nil
	case "histogram_quantile":
		if len(args) != 2 || !args[0].scalar || args[1].scalar {
			return value{}, fmt.Errorf("histogram_quantile(φ, buckets) wants a scalar and a vector")
		}
		if !args[1].labels["le"] {
			return value{}, fmt.Errorf("histogram_quantile over %v, which has no le label: aggregate _bucket series by (le)", args[1].metrics)
		}
		out := value{labels: map[string]bool{}, metrics: args[1].metrics}
		for l := range args[1].labels {
			if l != "le" {
				out.labels[l] = true
			}
		}
		return out, nil
	case "scalar":
		return value{scalar: true, metrics: args[0].metrics}, nil
	}
	for _, a := range args {
		if !a.scalar {
			return a, nil
		}
	}
	return value{}, fmt.Errorf("%s: no vector argument", name)
}

func (p *parser) selector() (value, error) {
	name := p.next().text
	labels, ok := metricLabels(name)
	if !ok {
		return value{}, fmt.Errorf("metric %q is not in the metric contract (a typo, or a metric no Nudge binary exports)", name)
	}
	if p.peek().text == "{" {
		p.next()
		for p.peek().text != "}" {
			l := p.next()
			if l.kind != "ident" {
				return value{}, fmt.Errorf("%s: bad label matcher at %q", name, l.text)
			}
			if !labels[l.text] {
				return value{}, fmt.Errorf("%s has no label %q", name, l.text)
			}
			if op := p.next(); !slices.Contains([]string{"=", "!=", "=~", "!~"}, op.text) {
				return value{}, fmt.Errorf("%s: bad matcher operator %q", name, op.text)
			}
			if v := p.next(); v.kind != "string" {
				return value{}, fmt.Errorf("%s: matcher value %q is not a string", name, v.text)
			}
			if p.peek().text == "," {
				p.next()
			} else if p.peek().text != "}" {
				return value{}, fmt.Errorf("%s: expected , or } in matchers, got %q", name, p.peek().text)
			}
		}
		p.next()
	}
	if p.peek().kind == "duration" {
		p.next()
	}
	return value{labels: labels, metrics: []string{name}}, nil
}
