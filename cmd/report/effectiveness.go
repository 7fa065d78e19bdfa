package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/report"
)

// effectFlags returns the flag set of effectiveness, writing into q.
func effectFlags(q *queryFlags) *flagenv.FlagSet {
	fs := flagenv.NewFlagSet("report effectiveness", "report effectiveness: per stage of the ladder, the reminders pushed, opened and converted", connEnv)
	q.register(fs.FlagSet, "-7d", "IANA time zone of -from and -to given as dates", "only reminders that reached this platform (fcm, apns, several)")
	return fs
}

// effectiveness prints the effectiveness report: per stage, pushed,
// opened, converted, their rates of the pushes, the median time from push
// to read.
func effectiveness(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	var o queryFlags
	fs := effectFlags(&o)
	fs.SetOutput(stdout)
	if err := o.parse(fs, args, getenv); err != nil {
		return err
	}
	q, _, err := o.rangeQuery(time.Now())
	if err != nil {
		return err
	}
	store, _, closeStore, err := o.conn.openStore(ctx, q.Live)
	if err != nil {
		return err
	}
	defer closeStore()
	e, err := store.Effectiveness(ctx, q)
	if err != nil {
		return queryError(err)
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
