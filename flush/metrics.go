package flush

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/nudgehq/nudge/internal/telemetry"
)

// metrics are the Prometheus series of a Flusher (Config.Metrics).
type metrics struct {
	duration    prometheus.Histogram
	rows        prometheus.Counter
	lastSuccess prometheus.Gauge
	errors      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	return &metrics{
		duration: telemetry.Histogram(reg, "nudge_flush_duration_seconds",
			"Time of one flush round.", prometheus.ExponentialBuckets(0.005, 2, 14)),
		rows: telemetry.Counter(reg, "nudge_flush_rows_total",
			"Counter rows added to counters_minute."),
		lastSuccess: telemetry.Gauge(reg, "nudge_flush_last_success_timestamp_seconds",
			"Unix time at which the last round without error ended."),
		errors: telemetry.Counter(reg, "nudge_flush_errors_total",
			"Flush rounds that ended with an error (lease lost included)."),
	}
}
