package jobs

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudgehq/nudge/counters"
	"github.com/nudgehq/nudge/internal/telemetry"
)

// Outcomes of nudge_reminders_total.
const (
	OutcomeScheduled  = "scheduled"
	OutcomeCancelled  = "cancelled"
	OutcomeSent       = "sent"
	OutcomeFailed     = "failed"
	OutcomeSuppressed = "suppressed"
	OutcomeDeferred   = "deferred"
)

// outcomeOf maps a reminder counter metric to its outcome label.
var outcomeOf = map[string]string{
	counters.RemindersQueued: OutcomeScheduled,
	counters.RemindersCancel: OutcomeCancelled,
	counters.RemindersSent:   OutcomeSent,
	counters.RemindersFailed: OutcomeFailed,
	counters.RemindersSuppr:  OutcomeSuppressed,
	counters.RemindersDefer:  OutcomeDeferred,
}

// metrics are the Prometheus series of the Scheduler and the Worker
// (Config.Metrics).
type metrics struct {
	reminders      *prometheus.CounterVec   // outcome, reason
	push           *prometheus.CounterVec   // platform, outcome, reason
	pushDuration   *prometheus.HistogramVec // platform
	tokensRemoved  *prometheus.CounterVec   // platform
	prefsFallback  prometheus.Counter
	lateness       prometheus.Histogram
	taskFailures   *prometheus.CounterVec // cause
	archived       prometheus.Counter
	templateErrors *prometheus.CounterVec // app
}

func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		reminders: telemetry.CounterVec(reg, "nudge_reminders_total",
			"Reminders by outcome (scheduled, cancelled, sent, failed, suppressed, deferred) and reason.", "outcome", "reason"),
		push: telemetry.CounterVec(reg, "nudge_push_total",
			"Pushes to devices by platform, outcome (delivered, token_invalid, retry, failed) and reason.", "platform", "outcome", "reason"),
		pushDuration: telemetry.HistogramVec(reg, "nudge_push_duration_seconds",
			"Time of one send to a provider (all tokens of a reminder on one platform, retries included).", prometheus.ExponentialBuckets(0.005, 2, 12), "platform"),
		tokensRemoved: telemetry.CounterVec(reg, "nudge_tokens_removed_total",
			"Device tokens removed from the registry as invalid, by platform.", "platform"),
		prefsFallback: telemetry.Counter(reg, "nudge_scheduler_delay_fallbacks_total",
			"Users whose reminder delay could not be read when their first reminder was scheduled (PostgreSQL away): the last known delay or the default was used."),
		lateness: telemetry.Histogram(reg, "nudge_reminder_lateness_seconds",
			"Time from a reminder's due time to its push (the first device's outcome recorded), for reminders pushed.", []float64{0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 3600}),
		taskFailures: telemetry.CounterVec(reg, "nudge_worker_task_failures_total",
			"Reminder tasks that failed as a whole and go back to asynq to retry, by cause (redis, postgres, timeout, other).", "cause"),
		archived: telemetry.Counter(reg, "nudge_worker_tasks_archived_total",
			"Reminder tasks that failed their last retry and that asynq archived: their reminders were not sent."),
		templateErrors: telemetry.CounterVec(reg, "nudge_worker_template_errors_total",
			"Reminder texts whose app template failed to render, by app: the built-in English text went out instead.", "app"),
	}
}

// reminder counts n reminders of a counter metric.
func (m *metrics) reminder(metric, reason string, n int) {
	if o, ok := outcomeOf[metric]; ok && n > 0 {
		m.reminders.WithLabelValues(o, reason).Add(float64(n))
	}
}
