package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/report"
)

// effectOptions are the flags of report effectiveness besides the
// connection.
type effectOptions struct {
	from, to, tz, app, platform, format string
	live                                bool
}

// effectFlags returns the flag set of effectiveness, writing into conn and o.
func effectFlags(conn *connFlags, o *effectOptions) *flag.FlagSet {
	fs := flag.NewFlagSet("report effectiveness", flag.ContinueOnError)
	fs.StringVar(&o.from, "from", "-7d", "start: now, -24h, -7d, 2026-03-01, or RFC 3339")
	fs.StringVar(&o.to, "to", "now", "end, excluded; same forms as -from")
	fs.StringVar(&o.tz, "tz", "UTC", "IANA time zone of -from and -to given as dates")
	fs.StringVar(&o.app, "app", "", "only this app")
	fs.StringVar(&o.platform, "platform", "", "only reminders that reached this platform (fcm, apns, several)")
	fs.StringVar(&o.format, "format", "table", "table or csv")
	fs.BoolVar(&o.live, "live", false, "add the counters not yet flushed, from Redis")
	conn.register(fs)
	fs.Usage = flagenv.UsageEnv(fs, "report effectiveness: per stage of the ladder, the reminders pushed, opened and converted", connEnv)
	return fs
}

// effectiveness prints the effectiveness report: per stage, pushed,
// opened, converted, their rates of the pushes, the median time from push
// to read.
func effectiveness(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var (
		conn connFlags
		o    effectOptions
	)
	fs := effectFlags(&conn, &o)
	fs.SetOutput(stdout)
	if err := parseFlags(fs, args, getenv, connEnv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if err := conn.check(); err != nil {
		return err
	}
	if o.format != "table" && o.format != "csv" {
		return fmt.Errorf("%w: -format must be table or csv, not %q", cli.ErrUsage, o.format)
	}
	loc, err := report.LoadLocation(o.tz)
	if err != nil {
		return fmt.Errorf("%w: -%w", cli.ErrUsage, err)
	}
	now := time.Now()
	q := report.RangeQuery{Filter: report.Filter{App: o.app, Platform: o.platform}, Live: o.live}
	if q.From, err = report.ParseTime(o.from, now, loc); err != nil {
		return fmt.Errorf("%w: -from %q: %w", cli.ErrUsage, o.from, err)
	}
	if q.To, err = report.ParseTime(o.to, now, loc); err != nil {
		return fmt.Errorf("%w: -to %q: %w", cli.ErrUsage, o.to, err)
	}
	store, _, closeStore, err := conn.openStore(ctx, q.Live)
	if err != nil {
		return err
	}
	defer closeStore()
	e, err := store.Effectiveness(ctx, q)
	if err != nil {
		var pe *report.ParamError
		if errors.As(err, &pe) {
			return fmt.Errorf("%w: -%w", cli.ErrUsage, err)
		}
		return err
	}
	if o.format == "csv" {
		return e.WriteCSV(stdout) // the API's CSV
	}
	return writeEffectTable(stdout, e)
}

func writeEffectTable(w io.Writer, e *report.Effectiveness) error {
	fmt.Fprintf(w, "Reminder effectiveness, %s to %s\n", e.From.UTC().Format(time.RFC3339), e.To.UTC().Format(time.RFC3339))
	if len(e.Stages) == 0 {
		fmt.Fprintln(w, "No reminder was pushed, opened or converted in this range.")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "stage\tpushed\topened\topen rate\tconverted\tconversion rate\tmedian push to read\t")
	rate := func(s report.StageEffect, v float64) string {
		if s.Pushed == 0 {
			return "-"
		}
		return strconv.FormatFloat(100*v, 'f', 1, 64) + " %"
	}
	for _, s := range e.Stages {
		median := "-"
		if s.MedianReadSeconds >= 0 {
			median = (time.Duration(s.MedianReadSeconds) * time.Second).String()
		}
		fmt.Fprintf(tw, "%d\t%d\t%d\t%s\t%d\t%s\t%s\t\n", s.Stage, s.Pushed, s.Opened, rate(s, s.OpenRate), s.Converted, rate(s, s.ConversionRate), median)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "Rates are of the %s (at most 100 %%). Converted: the conversation read within ingest's -conversion-window after the push.\n", report.BaseStagePushed)
	return err
}
