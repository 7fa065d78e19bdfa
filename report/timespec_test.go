package report

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestParseTime(t *testing.T) {
	t.Parallel()
	berlin, err := LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 3, 30, 12, 0, 0, 0, time.UTC) // 14:00 CEST
	tests := []struct {
		in   string
		loc  *time.Location
		want string // RFC 3339 in UTC; "" for an error
	}{
		{"now", time.UTC, "2026-03-30T12:00:00Z"},
		{"-24h", time.UTC, "2026-03-29T12:00:00Z"},
		{"now-24h", time.UTC, "2026-03-29T12:00:00Z"},
		{"-1h30m", time.UTC, "2026-03-30T10:30:00Z"},
		{"+15m", time.UTC, "2026-03-30T12:15:00Z"},
		{"-7d", time.UTC, "2026-03-23T12:00:00Z"},
		{"-2w", time.UTC, "2026-03-16T12:00:00Z"},
		// A calendar day in Berlin across the DST change: 14:00 CEST back
		// to 14:00 CET is 25 hours.
		{"-1d", berlin, "2026-03-29T12:00:00Z"},
		{"-2d", berlin, "2026-03-28T13:00:00Z"},
		{"2026-03-29T00:00:00+01:00", berlin, "2026-03-28T23:00:00Z"},
		{"2026-03-29T10:00:00Z", berlin, "2026-03-29T10:00:00Z"},
		{"2026-03-29T10:00:00.5Z", time.UTC, "2026-03-29T10:00:00.5Z"},
		{"2026-03-29", berlin, "2026-03-28T23:00:00Z"},
		{"2026-03-29", time.UTC, "2026-03-29T00:00:00Z"},
		{"2026-03-30T08:00", berlin, "2026-03-30T06:00:00Z"},
		{"2026-03-30T08:00:30", time.UTC, "2026-03-30T08:00:30Z"},
		{" now ", time.UTC, "2026-03-30T12:00:00Z"},
		{"", time.UTC, ""},
		{"yesterday", time.UTC, ""},
		{"nowish", time.UTC, ""},
		{"-", time.UTC, ""},
		{"--1h", time.UTC, ""},
		{"-1h-5m", time.UTC, ""},
		{"-d", time.UTC, ""},
		{"-99999999d", time.UTC, ""},
		{"24h", time.UTC, ""},
		{"2026-13-01", time.UTC, ""},
		{"1711756800", time.UTC, ""},
	}
	for _, tt := range tests {
		got, err := ParseTime(tt.in, now, tt.loc)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("ParseTime(%q) = %s, want an error", tt.in, got)
		case tt.want != "" && err != nil:
			t.Errorf("ParseTime(%q): %v", tt.in, err)
		case tt.want != "" && got.UTC().Format(time.RFC3339Nano) != tt.want:
			t.Errorf("ParseTime(%q) = %s, want %s", tt.in, got.UTC().Format(time.RFC3339Nano), tt.want)
		}
	}
}

func FuzzParseTime(f *testing.F) {
	for _, s := range []string{"now", "-24h", "-7d", "now-2w", "2026-03-29", "2026-03-29T10:00", "2026-03-29T10:00:00+01:00", "+1h30m"} {
		f.Add(s)
	}
	now := time.Date(2026, 3, 30, 12, 0, 0, 0, time.UTC)
	berlin, err := LoadLocation("Europe/Berlin")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, loc := range []*time.Location{time.UTC, berlin} {
			got, err := ParseTime(s, now, loc)
			if err != nil {
				continue
			}
			// A relative time stays within its century of now.
			if trimmed := strings.TrimSpace(s); strings.HasPrefix(trimmed, "now") || strings.HasPrefix(trimmed, "-") || strings.HasPrefix(trimmed, "+") {
				if d := got.Sub(now).Abs(); d > (maxRelativeDays+1)*24*time.Hour {
					t.Fatalf("ParseTime(%q) = %s, %s from now", s, got, d)
				}
			}
		}
	})
}

func TestLoadLocation(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"", "UTC", "Europe/Berlin", "Asia/Kolkata", "America/New_York"} {
		if _, err := LoadLocation(name); err != nil {
			t.Errorf("LoadLocation(%q): %v", name, err)
		}
	}
	for _, name := range []string{"Local", "Mars/Olympus", "../../etc/passwd", "/etc/localtime", "Europe/Berlin'; --"} {
		if _, err := LoadLocation(name); err == nil {
			t.Errorf("LoadLocation(%q) succeeded", name)
		} else if pe := (*ParamError)(nil); !errors.As(err, &pe) || pe.Param != "tz" {
			t.Errorf("LoadLocation(%q) = %v, want a tz ParamError", name, err)
		}
	}
}

func TestBucketsAcrossDST(t *testing.T) {
	t.Parallel()
	berlin, _ := LoadLocation("Europe/Berlin")
	kolkata, _ := LoadLocation("Asia/Kolkata")
	tests := []struct {
		name      string
		step      Step
		loc       *time.Location
		from, to  time.Time
		wantCount int
		wantFirst string
	}{
		{"Berlin days of March 28 to 31", StepDay, berlin, time.Date(2026, 3, 28, 5, 0, 0, 0, berlin), time.Date(2026, 3, 30, 5, 0, 0, 0, berlin), 3, "2026-03-28T00:00:00+01:00"},
		{"Berlin hours of the short day", StepHour, berlin, time.Date(2026, 3, 29, 0, 0, 0, 0, berlin), time.Date(2026, 3, 30, 0, 0, 0, 0, berlin), 23, "2026-03-29T00:00:00+01:00"},
		{"Berlin hours of the long day", StepHour, berlin, time.Date(2026, 10, 25, 0, 0, 0, 0, berlin), time.Date(2026, 10, 26, 0, 0, 0, 0, berlin), 25, "2026-10-25T00:00:00+02:00"},
		{"Kolkata hours", StepHour, kolkata, time.Date(2026, 5, 1, 10, 20, 0, 0, kolkata), time.Date(2026, 5, 1, 12, 0, 0, 0, kolkata), 2, "2026-05-01T10:00:00+05:30"},
		{"UTC minutes", StepMinute, time.UTC, time.Date(2026, 5, 1, 10, 0, 30, 0, time.UTC), time.Date(2026, 5, 1, 10, 3, 0, 0, time.UTC), 3, "2026-05-01T10:00:00Z"},
	}
	for _, tt := range tests {
		start := truncStep(tt.from, tt.step, tt.loc)
		end := ceilStep(tt.to, tt.step, tt.loc)
		bs := buckets(start, end, tt.step, tt.loc, 1000)
		if len(bs) != tt.wantCount || bs[0].Format(time.RFC3339) != tt.wantFirst {
			t.Errorf("%s: %d buckets from %s, want %d from %s", tt.name, len(bs), bs[0].Format(time.RFC3339), tt.wantCount, tt.wantFirst)
		}
		for i := 1; i < len(bs); i++ {
			if !bs[i].After(bs[i-1]) || !truncStep(bs[i], tt.step, tt.loc).Equal(bs[i]) {
				t.Errorf("%s: bucket %d %s does not follow %s or is not a bucket start", tt.name, i, bs[i], bs[i-1])
			}
		}
	}
}

func TestSourceTable(t *testing.T) {
	t.Parallel()
	berlin, _ := LoadLocation("Europe/Berlin")
	london, _ := LoadLocation("Europe/London")
	kolkata, _ := LoadLocation("Asia/Kolkata")
	winter := time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)
	summer := time.Date(2026, 7, 10, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		step     Step
		loc      *time.Location
		from, to time.Time
		want     string
	}{
		{StepMinute, time.UTC, winter, summer, tableMinute},
		{StepHour, time.UTC, winter, summer, tableHour},
		{StepDay, time.UTC, winter, summer, tableDay},
		{StepDay, berlin, winter, summer, tableHour},
		{StepHour, berlin, winter, summer, tableHour},
		{StepDay, london, winter, winter.Add(48 * time.Hour), tableDay}, // GMT: offset zero
		{StepDay, london, winter, summer, tableHour},                    // BST on the way
		{StepHour, kolkata, winter, summer, tableMinute},
		{StepDay, kolkata, winter, summer, tableMinute},
	}
	for _, tt := range tests {
		if got := sourceTable(tt.step, tt.loc, tt.from, tt.to); got != tt.want {
			t.Errorf("sourceTable(%s, %s, %s..%s) = %s, want %s", tt.step, tt.loc, tt.from, tt.to, got, tt.want)
		}
	}
}

// TestSpans checks that spans cover [from, to) exactly once, each table
// with buckets it holds whole.
func TestSpans(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for range 2000 {
		from := base.Add(time.Duration(rng.IntN(20*24*60)) * time.Minute)
		to := from.Add(time.Duration(1+rng.IntN([]int{90, 3 * 24 * 60, 15 * 24 * 60}[rng.IntN(3)])) * time.Minute)
		mins, hours, days := spans(from, to)
		all := []struct {
			s    span
			unit time.Duration
		}{{mins[0], time.Minute}, {mins[1], time.Minute}, {hours[0], time.Hour}, {hours[1], time.Hour}, {days, 24 * time.Hour}}
		var covered time.Duration
		for i, a := range all {
			if a.s.empty() {
				continue
			}
			if !a.s.from.Truncate(a.unit).Equal(a.s.from) || !a.s.to.Truncate(a.unit).Equal(a.s.to) {
				t.Fatalf("%s..%s: span %d %v is not whole %s", from, to, i, a.s, a.unit)
			}
			if a.s.from.Before(from) || a.s.to.After(to) {
				t.Fatalf("%s..%s: span %d %v is outside", from, to, i, a.s)
			}
			for j, b := range all[i+1:] {
				if !b.s.empty() && a.s.from.Before(b.s.to) && b.s.from.Before(a.s.to) {
					t.Fatalf("%s..%s: spans %d and %d overlap: %v %v", from, to, i, i+1+j, a.s, b.s)
				}
			}
			covered += a.s.to.Sub(a.s.from)
		}
		if covered != to.Sub(from) {
			t.Fatalf("%s..%s: spans cover %s of %s", from, to, covered, to.Sub(from))
		}
	}
}
