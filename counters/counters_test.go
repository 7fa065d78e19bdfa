package counters_test

import (
	"errors"
	"testing"

	"github.com/nudgehq/nudge/counters"
)

func TestFieldRoundTrip(t *testing.T) {
	t.Parallel()
	for _, d := range []counters.Dims{
		{Metric: "push_failed", App: "chat", Platform: "apns", Reason: "unregistered"},
		{Metric: "messages_sent", App: "default"},
	} {
		got, err := counters.ParseField(counters.Field(d))
		if err != nil || got != d {
			t.Errorf("round trip of %+v = %+v, %v", d, got, err)
		}
	}
	for _, bad := range []string{"", "a|b", "|a|b|c", "a|b|c|d|e"} {
		if _, err := counters.ParseField(bad); !errors.Is(err, counters.ErrBadField) {
			t.Errorf("ParseField(%q) = %v, want ErrBadField", bad, err)
		}
	}
}

// FuzzParseField: any string either fails with ErrBadField or parses into
// dimensions that encode back to the same field.
func FuzzParseField(f *testing.F) {
	f.Add("push_failed|chat|apns|unregistered")
	f.Add("messages_sent|default||")
	f.Add("|||")
	f.Fuzz(func(t *testing.T, s string) {
		d, err := counters.ParseField(s)
		if err != nil {
			if !errors.Is(err, counters.ErrBadField) {
				t.Fatalf("error %v is not ErrBadField", err)
			}
			return
		}
		if counters.Field(d) != s {
			t.Fatalf("Field(ParseField(%q)) = %q", s, counters.Field(d))
		}
	})
}
