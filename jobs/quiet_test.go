package jobs

import (
	"testing"
	"time"
)

func TestQuietUntil(t *testing.T) {
	t.Parallel()
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	ny, _ := time.LoadLocation("America/New_York")
	at := func(loc *time.Location, s string) time.Time {
		tm, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	tests := []struct {
		name       string
		now        time.Time
		loc        *time.Location
		start, end int
		want       time.Time // zero: not quiet
	}{
		{"outside", at(berlin, "2026-06-01 12:00"), berlin, 22 * 60, 7 * 60, time.Time{}},
		{"evening, ends next morning", at(berlin, "2026-06-01 23:10"), berlin, 22 * 60, 7 * 60, at(berlin, "2026-06-02 07:00")},
		{"after midnight", at(berlin, "2026-06-02 03:00"), berlin, 22 * 60, 7 * 60, at(berlin, "2026-06-02 07:00")},
		{"end is exclusive", at(berlin, "2026-06-02 07:00"), berlin, 22 * 60, 7 * 60, time.Time{}},
		{"daytime window", at(berlin, "2026-06-02 13:30"), berlin, 13 * 60, 14 * 60, at(berlin, "2026-06-02 14:00")},
		{"none", at(berlin, "2026-06-02 13:30"), berlin, -1, -1, time.Time{}},
		// The clocks go forward at 02:00 on 29 March 2026 in Berlin: the
		// night is an hour shorter, and 07:00 local is 05:00 UTC, not 06:00.
		{"spring forward", at(berlin, "2026-03-28 23:30"), berlin, 22 * 60, 7 * 60, time.Date(2026, 3, 29, 5, 0, 0, 0, time.UTC)},
		// And back at 03:00 on 25 October 2026: 07:00 local is 06:00 UTC.
		{"fall back", at(berlin, "2026-10-24 23:30"), berlin, 22 * 60, 7 * 60, time.Date(2026, 10, 25, 6, 0, 0, 0, time.UTC)},
		{"new york spring forward", at(ny, "2026-03-07 22:30"), ny, 22 * 60, 8 * 60, time.Date(2026, 3, 8, 12, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		got := quietUntil(tt.now, tt.loc, tt.start, tt.end)
		if !got.Equal(tt.want) {
			t.Errorf("%s: quietUntil(%s) = %s, want %s", tt.name, tt.now, got.UTC(), tt.want.UTC())
		}
	}
}
