package ingest

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudgehq/nudge/internal/telemetry"
)

// metrics are the Prometheus series of a Consumer (Config.Metrics).
type metrics struct {
	read          *prometheus.CounterVec // shard
	applied       prometheus.Counter
	dead          *prometheus.CounterVec // reason
	duplicates    prometheus.Counter
	batchDuration prometheus.Histogram
	lag           *prometheus.GaugeVec // shard
	pending       *prometheus.GaugeVec // shard
	lagSeconds    *prometheus.GaugeVec // shard
	trimmed       *prometheus.GaugeVec // shard
	owned         prometheus.Gauge
	applyErrors   prometheus.Counter
	relayErrors   *prometheus.CounterVec // relay
	outbox        *prometheus.GaugeVec   // outbox, shard
}

func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		read: telemetry.CounterVec(reg, "nudge_ingest_entries_read_total",
			"Stream entries read (new and claimed), by shard.", "shard"),
		applied: telemetry.Counter(reg, "nudge_ingest_events_applied_total",
			"Events applied to unread state and counters."),
		dead: telemetry.CounterVec(reg, "nudge_ingest_dead_lettered_total",
			"Entries sent to the dead-letter stream, by reason.", "reason"),
		duplicates: telemetry.Counter(reg, "nudge_ingest_duplicates_total",
			"Events skipped as producer retries (an event id applied within the dedupe window)."),
		batchDuration: telemetry.Histogram(reg, "nudge_ingest_batch_duration_seconds",
			"Time to apply one batch, retries included.", prometheus.ExponentialBuckets(0.001, 2, 14)),
		lag: telemetry.GaugeVec(reg, "nudge_ingest_lag",
			"Entries of the shard stream not yet delivered to the group (XINFO GROUPS lag), for the shards this consumer owns.", "shard"),
		pending: telemetry.GaugeVec(reg, "nudge_ingest_pending",
			"Entries delivered but not acknowledged (XPENDING), for the shards this consumer owns.", "shard"),
		lagSeconds: telemetry.GaugeVec(reg, "nudge_ingest_lag_seconds",
			"Age of the oldest entry of the shard stream not yet delivered to the group (0: none), for the shards this consumer owns; read from the group every 5 s, whatever the shard loop is doing.", "shard"),
		trimmed: telemetry.GaugeVec(reg, "nudge_ingest_trimmed_unread",
			"Entries of the shard stream trimmed before ingest's group read them (a producer's MAXLEN below the backlog): lost events. Read from the group's counters; not part of nudge_ingest_lag.", "shard"),
		owned: telemetry.Gauge(reg, "nudge_ingest_shards_owned",
			"Shards this consumer holds the lease of."),
		applyErrors: telemetry.Counter(reg, "nudge_ingest_apply_errors_total",
			"Failed attempts to apply a batch (each is retried, or split if Redis rejects it)."),
		relayErrors: telemetry.CounterVec(reg, "nudge_ingest_relay_errors_total",
			"Failed attempts of a relay (reminders: scheduling; registry: PostgreSQL) to hand over outbox entries; each is retried.", "relay"),
		outbox: telemetry.GaugeVec(reg, "nudge_ingest_outbox_entries",
			"Outbox entries a relay has yet to hand over (up to 64, the relay's batch), by outbox and shard, for the shards this consumer owns.", "outbox", "shard"),
	}
}

func shardLabel(s int) string { return strconv.Itoa(s) }

// forgetShard drops the gauges of a shard this consumer no longer owns.
func (m *metrics) forgetShard(s int) {
	m.lag.DeleteLabelValues(shardLabel(s))
	m.pending.DeleteLabelValues(shardLabel(s))
	m.lagSeconds.DeleteLabelValues(shardLabel(s))
	m.trimmed.DeleteLabelValues(shardLabel(s))
	m.outbox.DeleteLabelValues("reminders", shardLabel(s))
	m.outbox.DeleteLabelValues("registry", shardLabel(s))
}
