package main

// report print, and the settings it shares with report effectiveness.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/report"
)

// queryFlags are the settings print and effectiveness share: where the
// counters are, the range and its time zone, the filters, the output.
type queryFlags struct {
	conn                                connFlags
	from, to, tz, app, platform, format string
	live                                bool
}

// register adds the shared flags to fs; from is -from's default, tz and
// platform say what -tz and -platform mean to the command.
func (q *queryFlags) register(fs *flag.FlagSet, from, tz, platform string) {
	fs.StringVar(&q.from, "from", from, "start: now, -24h, -7d, 2026-03-01, or RFC 3339")
	fs.StringVar(&q.to, "to", "now", "end, excluded; same forms as -from")
	fs.StringVar(&q.tz, "tz", "UTC", tz)
	fs.StringVar(&q.app, "app", "", "only this app")
	fs.StringVar(&q.platform, "platform", "", platform)
	fs.StringVar(&q.format, "format", "table", "table or csv")
	fs.BoolVar(&q.live, "live", false, "add the counters not yet flushed, from Redis")
	q.conn.register(fs)
}

// parse reads fs's flags (and the connection's variables) from args, and
// checks the shared ones. It returns flag.ErrHelp for -h.
func (q *queryFlags) parse(fs *flagenv.FlagSet, args []string, getenv func(string) string) error {
	if err := cli.Parse(fs, args, getenv, false); err != nil {
		return err
	}
	if err := q.conn.check(); err != nil {
		return err
	}
	if q.format != "table" && q.format != "csv" {
		return cli.Usagef("-format must be table or csv, not %q", q.format)
	}
	return nil
}

// rangeQuery is the range and filters of the flags, the times read in
// their time zone.
func (q *queryFlags) rangeQuery(now time.Time) (report.RangeQuery, *time.Location, error) {
	r := report.RangeQuery{Filter: report.Filter{App: q.app, Platform: q.platform}, Live: q.live}
	loc, err := report.LoadLocation(q.tz)
	if err != nil {
		return r, nil, cli.Usage(fmt.Errorf("-%w", err))
	}
	if r.From, err = report.ParseTime(q.from, now, loc); err != nil {
		return r, nil, cli.Usagef("-from %q: %v", q.from, err)
	}
	if r.To, err = report.ParseTime(q.to, now, loc); err != nil {
		return r, nil, cli.Usagef("-to %q: %v", q.to, err)
	}
	return r, loc, nil
}

// queryError marks the store's refusal of a parameter as a usage error.
func queryError(err error) error {
	var pe *report.ParamError
	if errors.As(err, &pe) {
		return cli.Usage(fmt.Errorf("-%w", err))
	}
	return err
}

type printOptions struct {
	queryFlags
	metric, step, reason, group string
}

// printFlags returns the flag set of print, writing into o.
func printFlags(o *printOptions) *flagenv.FlagSet {
	fs := flagenv.NewFlagSet("report print", "report print: print a series of a metric", connEnv)
	o.register(fs.FlagSet, "-24h", "IANA time zone of the buckets, e.g. Europe/Berlin", "only this platform (fcm, apns)")
	fs.StringVar(&o.metric, "metric", "", "metric to print (required), e.g. messages_sent")
	fs.StringVar(&o.step, "step", "hour", "minute, hour or day")
	fs.StringVar(&o.reason, "reason", "", "only this reason")
	fs.StringVar(&o.group, "group", "", "a row per app, platform or reason")
	return fs
}

func printSeries(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var o printOptions
	fs := printFlags(&o)
	fs.SetOutput(stdout)
	if err := o.parse(fs, args, getenv); err != nil {
		return err
	}
	r, loc, err := o.rangeQuery(time.Now())
	if err != nil {
		return err
	}
	q := report.SeriesQuery{Metric: o.metric, Filter: r.Filter, From: r.From, To: r.To, Location: loc, Live: r.Live}
	q.Filter.Reason = o.reason
	if q.Step, err = report.ParseStep(o.step); err != nil {
		return cli.Usage(fmt.Errorf("-%w", err))
	}
	if q.Group, err = report.ParseDimension(o.group); err != nil {
		return cli.Usage(fmt.Errorf("-%w", err))
	}

	store, rdb, closeStore, err := o.conn.openStore(ctx, q.Live)
	if err != nil {
		return err
	}
	defer closeStore()
	s, err := store.Series(ctx, q)
	if err != nil {
		return queryError(err)
	}
	var note string
	if q.Live {
		if ok, err := prefixHasKeys(ctx, rdb, keys.New(o.conn.prefix, o.conn.shards)); err == nil && !ok {
			note = noKeysNote(o.conn.prefix)
		}
	}
	if o.format == "csv" {
		if note != "" { // not in the CSV
			fmt.Fprintln(os.Stderr, "report: note:", note)
		}
		return s.WriteCSV(stdout)
	}
	if err := writeTable(stdout, s); err != nil {
		return err
	}
	if note != "" {
		fmt.Fprintln(stdout, "note:", note)
	}
	return nil
}

// timeLayout formats a bucket start: with its zone's abbreviation, which
// tells apart the two 02:00 of a night when clocks go back.
func timeLayout(step report.Step) string {
	if step == report.StepDay {
		return "2006-01-02"
	}
	return "2006-01-02 15:04 MST"
}

func writeTable(w io.Writer, s *report.Series) error {
	grouped := s.Group != report.DimNone
	width := max(len(strconv.FormatInt(s.Total, 10)), len("VALUE"))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := []string{"TIME (" + s.TZ + ")"}
	if grouped {
		header = append(header, strings.ToUpper(string(s.Group)))
	}
	header = append(header, fmt.Sprintf("%*s", width, "VALUE"))
	if s.Live {
		header = append(header, "LIVE")
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	if len(s.Groups) > 0 {
		for i := range s.Groups[0].Points {
			for _, g := range s.Groups {
				p := g.Points[i]
				row := []string{p.Time.Format(timeLayout(s.Step))}
				if grouped {
					row = append(row, g.Key)
				}
				row = append(row, fmt.Sprintf("%*d", width, p.Value))
				if p.Live {
					row = append(row, "live")
				}
				fmt.Fprintln(tw, strings.Join(row, "\t"))
			}
		}
	}
	total := []string{"TOTAL"}
	if grouped {
		total = append(total, "")
	}
	total = append(total, fmt.Sprintf("%*d", width, s.Total))
	fmt.Fprintln(tw, strings.Join(total, "\t"))
	return tw.Flush()
}
