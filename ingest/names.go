package ingest

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/nudgehq/nudge/counters"
)

// applyNames are the names apply.lua writes, defined here from package
// counters and this package's reasons: the script gets them as the
// locals of a prelude (applyPrelude) and names none of them itself.
var applyNames = []struct{ local, value string }{
	{"mEventsApplied", counters.EventsApplied},
	{"mDuplicates", counters.Duplicates},
	{"mMessagesSent", counters.MessagesSent},
	{"mRecipients", counters.RecipientsFanned},
	{"mMentions", counters.Mentions},
	{"mReads", counters.Reads},
	{"mEpisodesOpened", counters.EpisodesOpened},
	{"mEpisodesClosed", counters.EpisodesClosed},
	{"mPresenceEvents", counters.PresenceEvents},
	{"mOpenedEvents", counters.OpenedEvents},
	{"mRemindersOpened", counters.RemindersOpened},
	{"mRemindersConverted", counters.RemindersConverted},
	{"mReadDelay", counters.ReadDelay},
	{"reasonApplyFailed", string(ReasonApplyFailed)},
}

var luaName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// applyPrelude is the Lua that defines applyNames and readBuckets
// (counters.ReadDelayBuckets, the upper bounds in seconds of the
// read-delay histogram) before apply.lua.
func applyPrelude() string {
	var b strings.Builder
	b.WriteString("-- Defined in Go (ingest/names.go), from package counters.\n")
	for _, n := range applyNames {
		if !luaName.MatchString(n.value) {
			panic(fmt.Sprintf("ingest: %q is no name for a Lua string", n.value))
		}
		fmt.Fprintf(&b, "local %s = '%s'\n", n.local, n.value)
	}
	buckets := make([]string, len(counters.ReadDelayBuckets))
	for i, s := range counters.ReadDelayBuckets {
		buckets[i] = strconv.Itoa(s)
	}
	fmt.Fprintf(&b, "local readBuckets = {%s}\n", strings.Join(buckets, ", "))
	return b.String()
}

// withPrelude puts prelude after the first line of src when that line is
// a shebang ("#!lua", which must stay first), else before src.
func withPrelude(src, prelude string) string {
	if first, rest, ok := strings.Cut(src, "\n"); ok && strings.HasPrefix(first, "#!") {
		return first + "\n" + prelude + rest
	}
	return prelude + src
}
