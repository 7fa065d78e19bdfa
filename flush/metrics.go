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
		duration: telemetry.Register(reg, prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "nudge_flush_duration_seconds",
			Help:    "Time of one flush round.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		})),
		rows: telemetry.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nudge_flush_rows_total",
			Help: "Counter rows added to counters_minute.",
		})),
		lastSuccess: telemetry.Register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "nudge_flush_last_success_timestamp_seconds",
			Help: "Unix time at which the last round without error ended.",
		})),
		errors: telemetry.Register(reg, prometheus.NewCounter(prometheus.CounterOpts{
			Name: "nudge_flush_errors_total",
			Help: "Flush rounds that ended with an error (lease lost included).",
		})),
	}
}
