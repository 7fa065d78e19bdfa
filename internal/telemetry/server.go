package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"golang.org/x/sync/errgroup"
)

// Check is one dependency /readyz asks: nil means ready.
type Check struct {
	Name  string
	Check func(ctx context.Context) error
}

// RedisCheck is ready when Redis answers PING.
func RedisCheck(rdb redis.UniversalClient) Check {
	return Check{Name: "redis", Check: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }}
}

// Pinger is what PostgresCheck needs of a pool.
type Pinger interface {
	Ping(ctx context.Context) error
}

// PostgresCheck is ready when PostgreSQL answers a ping.
func PostgresCheck(db Pinger) Check {
	return Check{Name: "postgres", Check: db.Ping}
}

// ServerConfig configures a Server.
type ServerConfig struct {
	// Addr is the listen address, e.g. 127.0.0.1:9090. Required.
	Addr string
	// Registry is served at /metrics. Required.
	Registry *prometheus.Registry
	// Checks are asked by /readyz, concurrently. Default none: ready.
	Checks []Check
	// CheckTimeout bounds each check. Default 2s.
	CheckTimeout time.Duration
	// Logger receives the server's logs. Default slog.Default().
	Logger *slog.Logger
}

// Server serves /metrics, /healthz and /readyz.
type Server struct {
	cfg ServerConfig
	ln  net.Listener
}

// Listen validates cfg and listens on cfg.Addr at once, so a taken port
// fails the command at start.
func Listen(cfg ServerConfig) (*Server, error) {
	if cfg.Addr == "" || cfg.Registry == nil {
		return nil, errors.New("telemetry: Addr and Registry are required")
	}
	if cfg.CheckTimeout == 0 {
		cfg.CheckTimeout = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("-metrics-addr: %w", err)
	}
	return &Server{cfg: cfg, ln: ln}, nil
}

// Addr returns the address the server listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Handler returns the server's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{Registry: s.cfg.Registry}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.ready)
	return mux
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	errs := make([]error, len(s.cfg.Checks))
	var wg sync.WaitGroup
	for i, c := range s.cfg.Checks {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(r.Context(), s.cfg.CheckTimeout)
			defer cancel()
			errs[i] = c.Check(ctx)
		})
	}
	wg.Wait()
	var b strings.Builder
	ok := true
	for i, c := range s.cfg.Checks {
		if errs[i] != nil {
			ok = false
			fmt.Fprintf(&b, "%s: %v\n", c.Name, errs[i])
		} else {
			fmt.Fprintf(&b, "%s: ok\n", c.Name)
		}
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if !ok {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprint(w, b.String())
}

// Run serves until ctx is done, then shuts down within 5s.
func (s *Server) Run(ctx context.Context) error {
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(s.ln) }()
	s.cfg.Logger.Info("metrics server listening", "addr", s.Addr())
	select {
	case err := <-done:
		return fmt.Errorf("metrics server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("metrics server: %w", err)
	}
	<-done
	return nil
}

// Close closes the listener of a Server that was never Run.
func (s *Server) Close() error { return s.ln.Close() }

// RunBeside runs main and, when cfg.Addr is set, a Server beside it: the
// server listens before main starts (a taken port fails at once), stops
// when main returns, and stops main (by its ctx) if it fails.
func RunBeside(ctx context.Context, cfg ServerConfig, main func(ctx context.Context) error) error {
	if cfg.Addr == "" {
		return main(ctx)
	}
	srv, err := Listen(cfg)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	mainDone, stopServer := context.WithCancel(gctx)
	g.Go(func() error { return srv.Run(mainDone) })
	g.Go(func() error {
		defer stopServer()
		return main(gctx)
	})
	return g.Wait()
}
