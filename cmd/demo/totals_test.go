package main

import (
	"strconv"
	"testing"

	"github.com/nudgehq/nudge/counters"
)

// Every line of the summary is at most 100 columns, however many reasons
// and however wide their counts (a CI run once printed 101: the comma that
// ends a wrapped line was not counted).
func TestSummaryLinesFit(t *testing.T) {
	reasons := []string{"duplicate_key", "missing_field", "invalid_field", "invalid_json", "unknown_version",
		"invalid_utf8", "too_large", "unknown_type"}
	for width := 1; width <= 7; width++ {
		for n := 1; n <= len(reasons); n++ {
			tt := totals{dead: 1, reasons: map[string]map[string]int64{counters.DeadLettered: {}}}
			for i, r := range reasons[:n] {
				c, _ := strconv.ParseInt(strconv.Itoa(i+1)+"000000"[:width-1], 10, 64)
				tt.reasons[counters.DeadLettered][r] = c
			}
			for _, line := range tt.lines() {
				if len(line) > 100 {
					t.Errorf("%d reasons, counts of %d digits: a line of %d columns: %s", n, width, len(line), line)
				}
			}
		}
	}
}
