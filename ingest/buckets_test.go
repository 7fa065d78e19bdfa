package ingest_test

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/nudgehq/nudge/counters"
)

// The read-delay buckets of apply.lua are counters.ReadDelayBuckets, which
// reports read back.
func TestReadBucketsMatchTheCounters(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("apply.lua")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`local readBuckets = \{([0-9, ]+)\}`).FindSubmatch(src)
	if m == nil {
		t.Fatal("no readBuckets in apply.lua")
	}
	var got []int
	for f := range strings.SplitSeq(string(m[1]), ",") {
		n, _ := strconv.Atoi(strings.TrimSpace(f))
		got = append(got, n)
	}
	if len(got) != len(counters.ReadDelayBuckets) {
		t.Fatalf("apply.lua %v, counters %v", got, counters.ReadDelayBuckets)
	}
	for i := range got {
		if got[i] != counters.ReadDelayBuckets[i] {
			t.Fatalf("apply.lua %v, counters %v", got, counters.ReadDelayBuckets)
		}
	}
}
