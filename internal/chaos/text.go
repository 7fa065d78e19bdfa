package chaos

import (
	"fmt"
	"io"
	"time"
)

// WriteText writes the report as cmd/chaos prints it: what the run did,
// the totals in PostgreSQL against the oracle's, and a FAIL line for each
// broken promise.
func (r Report) WriteText(w io.Writer, seed uint64) {
	fmt.Fprintf(w, "seed %d: %d events (%d entries with re-published copies), kills %v, %d pushes, %d unread pairs, %s\n",
		seed, r.Events, r.Published, r.Kills, r.Pushes, r.Unread, r.Elapsed.Round(time.Second))
	fmt.Fprintf(w, "  %d episodes unread past their due time: %d pushed, %d failed, %d suppressed, %d cancelled by a late read, %d still queued, %d unaccounted\n",
		r.EpisodesDue, r.EpisodesPushed, r.EpisodesFailed, r.EpisodesSuppressed, r.EpisodesCancelled, r.EpisodesQueued, r.EpisodesUnaccounted)
	fmt.Fprintf(w, "  %d pushes for an episode read before its due time (closest read %s after it)\n", r.ReadBeforeDue, r.ReadMargin.Round(time.Millisecond))
	r.writeTotals(w, "events_applied", "messages_sent", "recipients", "reads", "episodes_opened", "duplicates")
}

// WriteText writes the report of a Redis restart run as cmd/chaos prints it.
func (r RestartReport) WriteText(w io.Writer, seed uint64) {
	fmt.Fprintf(w, "seed %d, %s: %d events (%d entries, %d after the last restart), %d pushes (%d after), exits %v, %s\n",
		seed, r.Redis, r.Events, r.Published, r.AfterLastRestart, r.Pushes, r.PushesAfterLastRestart, r.Exits,
		r.Elapsed.Round(time.Second))
	fmt.Fprintf(w, "  producer: %d failed attempts retried, %d entries found added without a reply\n", r.Retries, r.Recovered)
	for i, o := range r.Outages {
		fmt.Fprintf(w, "  restart %d at %d entries: shutdown %s, down %s, every binary working again %s later (slowest %s)\n",
			i+1, o.At, o.Stop.Round(time.Millisecond), o.Down.Round(time.Millisecond), o.Recovered.Round(time.Millisecond), o.Slowest)
	}
	r.writeTotals(w, "events_applied", "messages_sent", "recipients", "reads", "episodes_opened", "episodes_closed", "duplicates")
}

func (r Report) writeTotals(w io.Writer, metrics ...string) {
	for _, m := range metrics {
		fmt.Fprintf(w, "  %-16s %10d in Postgres, %10d expected\n", m, r.Totals[m], r.Expected[m])
	}
	for _, f := range r.Failures {
		fmt.Fprintln(w, "FAIL:", f)
	}
}
