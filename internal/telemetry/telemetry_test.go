package telemetry_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/freeport"
	"github.com/nudgehq/nudge/internal/metricstest"
	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/internal/telemetry"
)

func TestRegisterTwiceSharesTheCollector(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	opts := prometheus.CounterOpts{Name: "x_total", Help: "x"}
	a := telemetry.Register(reg, prometheus.NewCounter(opts))
	b := telemetry.Register(reg, prometheus.NewCounter(opts))
	a.Inc()
	b.Inc()
	if a != b {
		t.Fatal("the second Register did not return the first collector")
	}
	if c := telemetry.Register(nil, prometheus.NewCounter(opts)); c == nil {
		t.Fatal("nil registry: want the collector back")
	}
}

func TestReadyz(t *testing.T) {
	t.Parallel()
	up, _ := redistest.New(t)
	down := redis.NewClient(&redis.Options{Addr: freeport.Addr(t), MaxRetries: -1})
	defer down.Close()
	reg := telemetry.NewRegistry()
	errs := telemetry.NewErrors(reg, "test")
	down.AddHook(telemetry.RedisHook(errs.Redis))
	up.AddHook(telemetry.RedisHook(errs.Redis))

	for _, tt := range []struct {
		name string
		rdb  redis.UniversalClient
		code int
	}{
		{"up", up, http.StatusOK},
		{"down", down, http.StatusServiceUnavailable},
	} {
		srv, err := telemetry.Listen(telemetry.ServerConfig{Addr: "127.0.0.1:0", Registry: reg, Checks: []telemetry.Check{telemetry.RedisCheck(tt.rdb)}})
		if err != nil {
			t.Fatal(err)
		}
		h := srv.Handler()
		_ = srv.Close()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		if rec.Code != tt.code || !strings.HasPrefix(rec.Body.String(), "redis: ") {
			t.Errorf("%s: /readyz = %d %q, want %d", tt.name, rec.Code, rec.Body.String(), tt.code)
		}
		rec = httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		if rec.Code != http.StatusOK {
			t.Errorf("%s: /healthz = %d", tt.name, rec.Code)
		}
	}
	// A nil reply is not an error; a refused connection is.
	_ = up.Get(context.Background(), "nudge-telemetry-test-absent").Err()
	rec := httptest.NewRecorder()
	srv, _ := telemetry.Listen(telemetry.ServerConfig{Addr: "127.0.0.1:0", Registry: reg})
	srv.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	_ = srv.Close()
	if got := metricstest.Sum(rec.Body.String(), `nudge_redis_errors_total{component="test"}`); got != 1 {
		t.Errorf("nudge_redis_errors_total = %v, want 1 (the failed PING only)\n", got)
	}
	if !strings.Contains(rec.Body.String(), "process_cpu_seconds_total") || !strings.Contains(rec.Body.String(), "go_goroutines") {
		t.Error("no Go or process collector")
	}
}

// A connection PostgreSQL refuses is counted as an error, as a failed
// query is: an outage moves nudge_postgres_errors_total.
func TestPGTracerCountsFailedConnections(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close() // nothing listens there now
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "errors"})
	cfg, err := pgxpool.ParseConfig("postgres://u@" + addr + "/db?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Tracer = telemetry.PGTracer(c)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if err := pool.Ping(context.Background()); err == nil {
		t.Fatal("ping of a closed port succeeded")
	}
	var m dto.Metric
	_ = c.Write(&m)
	if m.GetCounter().GetValue() < 1 {
		t.Errorf("failed connections counted: %v, want at least 1", m.GetCounter().GetValue())
	}
}
