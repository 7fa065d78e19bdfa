package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"text/tabwriter"
)

// Load is a deployment's traffic, for Plan.
type Load struct {
	DAU             float64 // daily active users
	MessagesPerUser float64 // messages an active user sends a day
	GroupShare      float64 // share of messages sent to a group (0 to 1); the rest are direct
	GroupSize       float64 // mean recipients of a group message
	ReadsPerMessage float64 // read events per message
	EpisodeShare    float64 // share of recipients a message opens an unread episode for (the rest had one open)
	ReadBeforeDue   float64 // share of episodes read before their first reminder (0 to 1)
	DevicesPerUser  float64 // push devices per user
	UnreadHours     float64 // mean time an episode stays open, hours
	PeakFactor      float64 // busiest second over the mean second
}

// DefaultLoad is a chat app's traffic, for the flags' defaults.
var DefaultLoad = Load{MessagesPerUser: 20, GroupShare: 0.3, GroupSize: 8, ReadsPerMessage: 1, EpisodeShare: 0.5,
	ReadBeforeDue: 0.7, DevicesPerUser: 1.3, UnreadHours: 2, PeakFactor: 3}

// Costs are the per-unit costs a bench run measures.
type Costs struct {
	RedisUsPerEvent        float64 // Redis CPU per one-recipient message (ingest_redis_us_per_event)
	RedisUsPerRecipient    float64 // per further recipient (burst_apply_ms over burst_members: wall time, an upper bound)
	BytesPerEpisode        float64 // Redis memory per open episode
	BytesPerIdleUser       float64 // per active user with nothing unread
	BytesPerReminderRecord float64 // per reminder record (sent set), kept 48 h once sent
	RedisUsPerPush         float64 // Redis CPU per push (push_redis_us_per_push: the worker's state reads, claims, records, finishes)
	PushesPerCore          float64 // pushes/s of one worker core (a million over push_worker_cpu_us_per_push; push_per_s over the run's cores before that was measured)
	EventsPerCore          float64 // events/s of one ingest core (ingest_events_per_s over the cores)
}

// CostsOf derives Costs from a run on a machine of cores cores. A figure
// the run did not measure keeps the one of last.
func CostsOf(r *Result, cores int, last Costs) Costs {
	c := last
	n := float64(max(cores, 1))
	set := func(dst *float64, v float64) {
		if v > 0 && !math.IsNaN(v) {
			*dst = v
		}
	}
	set(&c.RedisUsPerEvent, r.IngestRedisUsPerEvent)
	if r.BurstMembers > 0 {
		set(&c.RedisUsPerRecipient, r.BurstApplyMs*1000/float64(r.BurstMembers))
	}
	set(&c.BytesPerEpisode, r.RedisBytesPerEpisode)
	set(&c.BytesPerIdleUser, r.RedisBytesPerIdleUser)
	set(&c.RedisUsPerPush, r.PushRedisUsPerPush)
	if r.PushWorkerCPUUsPerPush > 0 {
		set(&c.PushesPerCore, 1e6/r.PushWorkerCPUUsPerPush)
	} else {
		set(&c.PushesPerCore, r.PushPerS/n)
	}
	set(&c.EventsPerCore, r.IngestEventsPerS/n)
	return c
}

// CostsFromFile is CostsOf the run written to path (bench -json).
func CostsFromFile(path string, cores int, last Costs) (Costs, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return last, err
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return last, fmt.Errorf("%s: %w", path, err)
	}
	return CostsOf(&r, cores, last), nil
}

// MeasuredCosts are the per-unit costs of the last full run in
// BENCHMARKS.md (2 cores); the reminder record's size comes from
// e2e: TestMemoryReturnsToBaseline's peak (sent sets over their count).
// The Redis time per event is the main thread's CPU (INFO cpu), measured
// since the apps, languages and effectiveness work; the other figures are
// of the quieter run before it.
//
// The push figures are of the sixteenth session's last run (2026-12-06
// 05:51 UTC): Redis 81 µs and the worker process 235 µs of CPU a push.
var MeasuredCosts = Costs{RedisUsPerEvent: 37.9, RedisUsPerRecipient: 11.2, BytesPerEpisode: 320, BytesPerIdleUser: 501,
	BytesPerReminderRecord: 335, RedisUsPerPush: 81, PushesPerCore: 4250, EventsPerCore: 31000}

// Sizing is what one unit of each part can take.
type Sizing struct {
	RedisCoreShare  float64 // share of a master's core Nudge may use (headroom for peaks and replication)
	MemoryPerMaster float64 // bytes of data a master may hold
	CoresPerReplica float64 // cores of a worker or ingest replica
	PushConcurrency int     // sends in flight a worker replica (worker -push-concurrency)
	ProviderLatency float64 // seconds a push provider takes to answer a send
}

// DefaultSizing leaves half of each Redis core and of 25 GiB free, and
// gives a worker its default 64 sends in flight to providers that answer
// in 100 ms.
var DefaultSizing = Sizing{RedisCoreShare: 0.5, MemoryPerMaster: 12.5 * (1 << 30), CoresPerReplica: 2, PushConcurrency: 64, ProviderLatency: 0.1}

// Plan is what a load needs.
type Plan struct {
	Load   Load
	Costs  Costs
	Sizing Sizing

	MessagesPerS, PeakEventsPerS, PeakRecipientsPerS float64
	PeakRedisCores                                   float64 // Redis core-seconds per second at the peak
	OpenEpisodes, ReminderRecords                    float64
	RedisBytes                                       float64
	RemindersPerDay, PeakPushesPerS                  float64

	// What one worker replica can push a second: by its cores, and by its
	// sends in flight over the provider's latency.
	WorkerCPUPushesPerS, WorkerInFlightPushesPerS float64

	MastersForCPU, MastersForMemory, Masters int
	Shards                                   int
	IngestReplicas, WorkerReplicas           int
}

// CheckPlan returns an error for a load or sizing that makes no sense.
func CheckPlan(l Load, s Sizing) error {
	if l.DAU <= 0 || l.MessagesPerUser <= 0 || l.GroupShare < 0 || l.GroupShare > 1 || l.GroupSize < 1 ||
		l.ReadBeforeDue < 0 || l.ReadBeforeDue > 1 || l.EpisodeShare < 0 || l.EpisodeShare > 1 || l.PeakFactor < 1 ||
		s.RedisCoreShare <= 0 || s.RedisCoreShare > 1 || s.MemoryPerMaster <= 0 || s.CoresPerReplica <= 0 ||
		s.PushConcurrency <= 0 || s.ProviderLatency <= 0 {
		return errors.New("-plan: -dau and -messages-per-user must be positive, shares within 0 to 1, -group-size and -peak-factor at least 1, sizes positive")
	}
	return nil
}

// PlanFor sizes a deployment for l from the per-unit costs c.
func PlanFor(l Load, c Costs, s Sizing) Plan {
	p := Plan{Load: l, Costs: c, Sizing: s}
	const day = 86400.0
	msgs := l.DAU * l.MessagesPerUser
	rcpt := (1-l.GroupShare)*1 + l.GroupShare*l.GroupSize
	recipients := msgs * rcpt
	reads := msgs * l.ReadsPerMessage
	p.MessagesPerS = msgs / day
	p.PeakEventsPerS = (msgs + reads) / day * l.PeakFactor
	p.PeakRecipientsPerS = recipients / day * l.PeakFactor
	episodes := recipients * l.EpisodeShare
	p.OpenEpisodes = episodes / 24 * l.UnreadHours
	p.RemindersPerDay = episodes * (1 - l.ReadBeforeDue)
	p.ReminderRecords = p.RemindersPerDay * 2 // kept 48 h
	p.RedisBytes = p.OpenEpisodes*c.BytesPerEpisode + l.DAU*c.BytesPerIdleUser + p.ReminderRecords*c.BytesPerReminderRecord
	pushes := p.RemindersPerDay * l.DevicesPerUser
	p.PeakPushesPerS = pushes / day * l.PeakFactor
	redisUs := msgs*(c.RedisUsPerEvent+(rcpt-1)*c.RedisUsPerRecipient) + reads*c.RedisUsPerEvent + pushes*c.RedisUsPerPush
	p.PeakRedisCores = redisUs / day * l.PeakFactor / 1e6

	p.MastersForCPU = ceil(p.PeakRedisCores / s.RedisCoreShare)
	p.MastersForMemory = ceil(p.RedisBytes / s.MemoryPerMaster)
	p.Masters = max(p.MastersForCPU, p.MastersForMemory, 1)
	// Several shards a master, so that shards spread evenly and replicas
	// have some to share: the next power of two of 4 per master, at least 8.
	p.Shards = 8
	for p.Shards < 4*p.Masters {
		p.Shards *= 2
	}
	p.IngestReplicas = min(max(ceil(p.PeakEventsPerS/(c.EventsPerCore*s.CoresPerReplica)), 1), p.Shards)
	// A worker replica pushes as fast as its cores allow, or as its sends
	// in flight do while each waits for the provider's answer: the lower.
	p.WorkerCPUPushesPerS = c.PushesPerCore * s.CoresPerReplica
	p.WorkerInFlightPushesPerS = float64(s.PushConcurrency) / s.ProviderLatency
	p.WorkerReplicas = max(ceil(p.PeakPushesPerS/min(p.WorkerCPUPushesPerS, p.WorkerInFlightPushesPerS)), 1)
	return p
}

func ceil(x float64) int {
	if math.IsNaN(x) || x <= 0 {
		return 0
	}
	return int(math.Ceil(x))
}

// Print writes the plan as a table, each figure with how it was reached.
func (p Plan) Print(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	l, c, s := p.Load, p.Costs, p.Sizing
	row := func(what, value, how string) { fmt.Fprintf(tw, "%s\t%s\t%s\n", what, value, how) }
	row("daily active users", human(l.DAU), "")
	row("messages", human(p.MessagesPerS)+"/s", fmt.Sprintf("%g a user a day, %.0f%% to groups of %g", l.MessagesPerUser, 100*l.GroupShare, l.GroupSize))
	row("events at the peak", human(p.PeakEventsPerS)+"/s", fmt.Sprintf("messages and %g read a message, × %g peak", l.ReadsPerMessage, l.PeakFactor))
	row("recipient updates at the peak", human(p.PeakRecipientsPerS)+"/s", "")
	row("Redis time at the peak", fmt.Sprintf("%.1f cores", p.PeakRedisCores), fmt.Sprintf("%.1f µs a message, %.1f µs a further recipient, %.1f µs a push", c.RedisUsPerEvent, c.RedisUsPerRecipient, c.RedisUsPerPush))
	row("open unread episodes", human(p.OpenEpisodes), fmt.Sprintf("%.0f%% of recipients open one, open %g h", 100*l.EpisodeShare, l.UnreadHours))
	row("reminders", human(p.RemindersPerDay)+"/day", fmt.Sprintf("%.0f%% of episodes read before the first", 100*l.ReadBeforeDue))
	row("Redis memory", humanBytes(p.RedisBytes), fmt.Sprintf("%.0f B an episode, %.0f B an active user, %.0f B a reminder record (48 h)", c.BytesPerEpisode, c.BytesPerIdleUser, c.BytesPerReminderRecord))
	row("pushes at the peak", human(p.PeakPushesPerS)+"/s", fmt.Sprintf("%g devices a user", l.DevicesPerUser))
	row("Redis Cluster masters", fmt.Sprint(p.Masters), fmt.Sprintf("%d for CPU (%.0f%% of a core each), %d for memory (%s each)", p.MastersForCPU, 100*s.RedisCoreShare, p.MastersForMemory, humanBytes(s.MemoryPerMaster)))
	row("shards (-shards)", fmt.Sprint(p.Shards), "4 or more a master, a power of two")
	row("ingest replicas", fmt.Sprint(p.IngestReplicas), fmt.Sprintf("%s events/s a core, %g cores each", human(c.EventsPerCore), s.CoresPerReplica))
	how := fmt.Sprintf("%s pushes/s each: %d sends in flight (-push-concurrency) at %g ms a send (its %g cores at %s pushes/s a core would push %s/s)",
		human(p.WorkerInFlightPushesPerS), s.PushConcurrency, 1000*s.ProviderLatency, s.CoresPerReplica, human(c.PushesPerCore), human(p.WorkerCPUPushesPerS))
	if p.WorkerCPUPushesPerS < p.WorkerInFlightPushesPerS {
		how = fmt.Sprintf("%s pushes/s each: %s pushes/s a core, %g cores (%d sends in flight at %g ms would allow %s/s)", human(p.WorkerCPUPushesPerS),
			human(c.PushesPerCore), s.CoresPerReplica, s.PushConcurrency, 1000*s.ProviderLatency, human(p.WorkerInFlightPushesPerS))
	}
	row("worker replicas", fmt.Sprint(p.WorkerReplicas), how)
	_ = tw.Flush()
}

func human(x float64) string {
	switch {
	case x >= 1e9:
		return fmt.Sprintf("%.1fG", x/1e9)
	case x >= 1e6:
		return fmt.Sprintf("%.1fM", x/1e6)
	case x >= 1e4:
		return fmt.Sprintf("%.0fk", x/1e3)
	case x >= 1e3:
		return fmt.Sprintf("%.1fk", x/1e3)
	}
	return fmt.Sprintf("%.0f", x)
}

func humanBytes(b float64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.1f GiB", b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	}
	return fmt.Sprintf("%.0f KiB", b/(1<<10))
}
