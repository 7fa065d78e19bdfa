package bench

import (
	"math"
	"strings"
	"testing"
)

// PlanFor's arithmetic on a load small enough to check by hand.
func TestPlanFor(t *testing.T) {
	l := Load{DAU: 86_400, MessagesPerUser: 10, GroupShare: 0.5, GroupSize: 3, ReadsPerMessage: 1, EpisodeShare: 1,
		ReadBeforeDue: 0.5, DevicesPerUser: 2, UnreadHours: 24, PeakFactor: 2}
	c := Costs{RedisUsPerEvent: 100, RedisUsPerRecipient: 50, BytesPerEpisode: 100, BytesPerIdleUser: 1000,
		BytesPerReminderRecord: 10, RedisUsPerPush: 100, PushesPerCore: 1, EventsPerCore: 1}
	s := Sizing{RedisCoreShare: 0.5, MemoryPerMaster: 1 << 30, CoresPerReplica: 2, PushConcurrency: 10, ProviderLatency: 0.1}
	p := PlanFor(l, c, s)
	// 864,000 messages a day = 10/s, each to 2 recipients on average.
	if p.MessagesPerS != 10 || p.PeakEventsPerS != 40 || p.PeakRecipientsPerS != 40 {
		t.Errorf("rates %v %v %v, want 10, 40, 40", p.MessagesPerS, p.PeakEventsPerS, p.PeakRecipientsPerS)
	}
	// Per second: 10 × (100 + 50) + 10 × 100 µs = 2,500 µs for the events and
	// 20 × 100 µs for the pushes (below), × 2 at the peak.
	if math.Abs(p.PeakRedisCores-0.009) > 1e-12 {
		t.Errorf("Redis cores %v, want 0.009", p.PeakRedisCores)
	}
	// 1.728M episodes a day open for a day; half get a reminder, kept 2 days.
	if p.OpenEpisodes != 1_728_000 || p.RemindersPerDay != 864_000 || p.ReminderRecords != 1_728_000 {
		t.Errorf("episodes %v, reminders %v, records %v", p.OpenEpisodes, p.RemindersPerDay, p.ReminderRecords)
	}
	if want := 1_728_000*100 + 86_400*1000 + 1_728_000*10.0; p.RedisBytes != want {
		t.Errorf("memory %v, want %v", p.RedisBytes, want)
	}
	if p.MastersForCPU != 1 || p.MastersForMemory != 1 || p.Masters != 1 || p.Shards != 8 {
		t.Errorf("masters %d/%d/%d, shards %d", p.MastersForCPU, p.MastersForMemory, p.Masters, p.Shards)
	}
	// 40 pushes/s at the peak, 2 a replica (its cores: 10 in flight at 100 ms
	// would allow 100); 40 events/s, 2 a replica (at most the shards).
	if p.PeakPushesPerS != 40 || p.WorkerReplicas != 20 || p.IngestReplicas != 8 {
		t.Errorf("pushes %v, workers %d, ingest %d", p.PeakPushesPerS, p.WorkerReplicas, p.IngestReplicas)
	}
	// With fast cores, the sends in flight bound a replica: 1 at 100 ms is
	// 10 pushes/s, so 40 need 4 replicas.
	c.PushesPerCore, s.PushConcurrency = 1000, 1
	if q := PlanFor(l, c, s); q.WorkerCPUPushesPerS != 2000 || q.WorkerInFlightPushesPerS != 10 || q.WorkerReplicas != 4 {
		t.Errorf("latency-bound: %v pushes/s by cores, %v in flight, %d workers, want 2000, 10, 4", q.WorkerCPUPushesPerS, q.WorkerInFlightPushesPerS, q.WorkerReplicas)
	}
	var b strings.Builder
	p.Print(&b)
	for _, want := range []string{"Redis Cluster masters", "worker replicas", "ingest replicas", "shards (-shards)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the table has no %q:\n%s", want, b.String())
		}
	}
}

// A run's figures become per-unit costs; what it did not measure keeps the
// earlier figure.
func TestCostsOf(t *testing.T) {
	r := &Result{IngestRedisUsPerEvent: 12, BurstMembers: 1000, BurstApplyMs: 50, RedisBytesPerEpisode: 300, PushPerS: 4000, IngestEventsPerS: 60000}
	c := CostsOf(r, 2, MeasuredCosts)
	if c.RedisUsPerEvent != 12 || c.RedisUsPerRecipient != 50 || c.BytesPerEpisode != 300 || c.PushesPerCore != 2000 ||
		c.EventsPerCore != 30000 || c.BytesPerIdleUser != MeasuredCosts.BytesPerIdleUser || c.RedisUsPerPush != MeasuredCosts.RedisUsPerPush {
		t.Errorf("costs %+v", c)
	}
	// A run that read the worker's CPU a push: a core pushes a million µs'
	// worth; Redis's CPU a push is taken too.
	r.PushWorkerCPUUsPerPush, r.PushRedisUsPerPush = 250, 70
	if c := CostsOf(r, 2, MeasuredCosts); c.PushesPerCore != 4000 || c.RedisUsPerPush != 70 {
		t.Errorf("with the worker's CPU: %v pushes/s a core, %v µs of Redis a push; want 4000, 70", c.PushesPerCore, c.RedisUsPerPush)
	}
}
