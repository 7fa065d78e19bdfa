// Package telemetry is what every Nudge process exposes to operators: a
// Prometheus registry of its own (never the global default one), the
// counters of Redis and PostgreSQL errors, and an HTTP server of /metrics,
// /healthz (the process is alive) and /readyz (what it depends on answers).
//
// Library packages (ingest, jobs, flush) take a prometheus.Registerer in
// their Config, nil meaning no metrics, and register their collectors with
// Register, which tolerates a second component registering the same
// collector on one registry.
package telemetry

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/datastore"
)

// NewRegistry returns a registry holding the Go runtime and process
// collectors.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Register registers c with reg and returns it; if an equal collector is
// registered already, it returns that one, so two components of one process
// share their series. With a nil reg, c is returned unregistered: it counts,
// and nobody reads it.
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if reg == nil {
		return c
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err) // a programming error: two different metrics of one name
	}
	return c
}

// Errors are the error counters of one component's stores:
// nudge_redis_errors_total{component} and
// nudge_postgres_errors_total{component}.
type Errors struct {
	Redis    prometheus.Counter
	Postgres prometheus.Counter
}

// NewErrors registers the error counters of component with reg (nil: not
// registered).
func NewErrors(reg prometheus.Registerer, component string) Errors {
	r := CounterVec(reg, "nudge_redis_errors_total",
		"Redis commands that failed (not counting nil replies and expected errors), by component.", "component")
	p := CounterVec(reg, "nudge_postgres_errors_total",
		"PostgreSQL queries that failed, by component.", "component")
	return Errors{Redis: r.WithLabelValues(component), Postgres: p.WithLabelValues(component)}
}

// RedisHook returns a go-redis hook counting failed commands and pipelines
// in c: rdb.AddHook(telemetry.RedisHook(errs.Redis)).
func RedisHook(c prometheus.Counter) redis.Hook { return redisHook{c} }

type redisHook struct{ c prometheus.Counter }

func (h redisHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if failed(err) {
			h.c.Inc()
		}
		return err
	}
}

func (h redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			if failed(cmd.Err()) {
				h.c.Inc()
				break
			}
		}
		return err
	}
}

// expected are replies that are part of normal work, not failures: a
// script not cached yet (go-redis then sends it), a consumer group that
// exists, Nudge's own lease and order fences.
var expected = []string{datastore.CodeNoScript, datastore.CodeBusyGroup, datastore.CodeLease, datastore.CodeOrder}

func failed(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, context.Canceled) {
		return false
	}
	return !datastore.HasCode(err, expected...)
}

// PGTracer returns a pgx tracer counting failed queries and failed
// connections in c; set it as the ConnConfig.Tracer of a pool.
func PGTracer(c prometheus.Counter) pgx.QueryTracer { return pgTracer{c} }

type pgTracer struct{ c prometheus.Counter }

func (t pgTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}

func (t pgTracer) TraceQueryEnd(_ context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	if data.Err != nil && !errors.Is(data.Err, context.Canceled) && !errors.Is(data.Err, pgx.ErrNoRows) {
		t.c.Inc()
	}
}

// TraceConnectStart and TraceConnectEnd count a connection that could not
// be made (PostgreSQL away, refused credentials): pgx calls them because
// the tracer implements pgx.ConnectTracer. A query that never ran for want
// of a connection is counted once, here.
func (t pgTracer) TraceConnectStart(ctx context.Context, _ pgx.TraceConnectStartData) context.Context {
	return ctx
}

func (t pgTracer) TraceConnectEnd(_ context.Context, data pgx.TraceConnectEndData) {
	if data.Err != nil && !errors.Is(data.Err, context.Canceled) {
		t.c.Inc()
	}
}
