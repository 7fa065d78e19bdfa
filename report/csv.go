package report

import (
	"encoding/csv"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The CSV form of each answer of the API (tabular): what reply writes
// when a request asks for CSV.

func (res *Totals) csvTable() (string, []string, [][]string) {
	header := []string{"metric", "value", "live"}
	if res.Group != DimNone {
		header = []string{"metric", string(res.Group), "value", "live"}
	}
	rows := make([][]string, 0, len(res.Totals))
	for _, t := range res.Totals {
		row := []string{t.Metric, itoa(t.Value), strconv.FormatBool(t.Live)}
		if res.Group != DimNone {
			row = slices.Insert(row, 1, csvCell(t.Key))
		}
		rows = append(rows, row)
	}
	return "totals", header, rows
}

func (res *Funnel) csvTable() (string, []string, [][]string) {
	rows := make([][]string, 0, len(res.Steps))
	for _, st := range res.Steps {
		rows = append(rows, []string{st.Metric, itoa(st.Value), ftoa(st.Share), st.Base, strconv.FormatBool(st.Live)})
	}
	return "funnel", []string{"metric", "value", "share", "base", "live"}, rows
}

// WriteCSV writes the effectiveness report as CSV, as GET
// /api/effectiveness?format=csv answers it: a header, then a row per stage.
func (res *Effectiveness) WriteCSV(w io.Writer) error {
	_, header, rows := res.csvTable()
	return writeCSVRows(w, header, rows)
}

func (res *Effectiveness) csvTable() (string, []string, [][]string) {
	rows := make([][]string, 0, len(res.Stages))
	for _, st := range res.Stages {
		rows = append(rows, []string{strconv.Itoa(st.Stage), itoa(st.Pushed), itoa(st.Opened), itoa(st.Converted), ftoa(st.OpenRate),
			ftoa(st.ConversionRate), st.Base, ftoa(st.MedianReadSeconds), strconv.FormatBool(st.Live)})
	}
	return "effectiveness", []string{"stage", "pushed", "opened", "converted", "open_rate", "conversion_rate", "base",
		"median_read_seconds", "live"}, rows
}

func (res *Push) csvTable() (string, []string, [][]string) {
	// One long table: the per-platform sums, then failures by reason.
	var rows [][]string
	for _, p := range res.Platforms {
		pl := csvCell(p.Platform)
		rows = append(rows,
			[]string{"push_sent", pl, "", itoa(p.Sent)},
			[]string{"push_failed", pl, "", itoa(p.Failed)},
			[]string{"tokens_removed", pl, "", itoa(p.TokensRemoved)},
		)
	}
	for _, f := range res.Failures {
		rows = append(rows, []string{"push_failed", csvCell(f.Platform), csvCell(f.Reason), itoa(f.Count)})
	}
	return "push", []string{"metric", "platform", "reason", "value"}, rows
}

func (res *DAU) csvTable() (string, []string, [][]string) {
	header := []string{"day", "users"}
	if res.ByApp {
		header = []string{"day", "app", "users"}
	}
	var rows [][]string
	if len(res.Groups) > 0 {
		for i := range res.Groups[0].Points {
			for _, g := range res.Groups {
				row := []string{g.Points[i].Day, itoa(g.Points[i].Users)}
				if res.ByApp {
					row = slices.Insert(row, 1, csvCell(g.Key))
				}
				rows = append(rows, row)
			}
		}
	}
	return "daily_active_users", header, rows
}

func (res *Dimensions) csvTable() (string, []string, [][]string) {
	var rows [][]string
	for _, a := range res.Apps {
		rows = append(rows, []string{"app", csvCell(a)})
	}
	for _, p := range res.Platforms {
		rows = append(rows, []string{"platform", csvCell(p)})
	}
	return "dimensions", []string{"dimension", "value"}, rows
}

// metricsAnswer is the answer of /api/metrics.
type metricsAnswer struct {
	Funnel  []string `json:"funnel"`
	Live    bool     `json:"live"`
	Metrics []Metric `json:"metrics"`
}

func (a metricsAnswer) csvTable() (string, []string, [][]string) {
	rows := make([][]string, 0, len(a.Metrics))
	for _, m := range a.Metrics {
		dims := make([]string, len(m.Dims))
		for i, d := range m.Dims {
			dims[i] = string(d)
		}
		rows = append(rows, []string{m.Name, m.Description, strings.Join(dims, " ")})
	}
	return "metrics", []string{"name", "description", "dims"}, rows
}

// csvCell keeps a spreadsheet from reading a dimension value (written by
// event producers) as a formula.
func csvCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

func setCSVHeaders(w http.ResponseWriter, name string) {
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.csv"`)
}

func writeCSVRows(w io.Writer, header []string, rows [][]string) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(header); err != nil {
		return err
	}
	return cw.WriteAll(rows) // flushes
}

// WriteCSV writes the series as CSV: a header, then a row per bucket (and
// group): time (RFC 3339 in the query's zone), the group's value if
// grouped, value, live.
func (s *Series) WriteCSV(w io.Writer) error {
	_, header, rows := s.csvTable()
	return writeCSVRows(w, header, rows)
}

func (s *Series) csvTable() (name string, header []string, rows [][]string) {
	header = []string{"time", "value", "live"}
	if s.Group != DimNone {
		header = []string{"time", string(s.Group), "value", "live"}
	}
	if len(s.Groups) > 0 {
		for i := range s.Groups[0].Points {
			for _, g := range s.Groups {
				p := g.Points[i]
				row := []string{p.Time.Format(time.RFC3339), itoa(p.Value), strconv.FormatBool(p.Live)}
				if s.Group != DimNone {
					row = slices.Insert(row, 1, csvCell(g.Key))
				}
				rows = append(rows, row)
			}
		}
	}
	return s.Metric, header, rows
}
