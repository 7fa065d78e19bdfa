package report

import (
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of ServerConfig.
const (
	DefaultAddr            = "127.0.0.1:8090"
	DefaultQueryTimeout    = 30 * time.Second
	DefaultShutdownTimeout = 10 * time.Second
)

// Minimum lengths of the credentials: shorter ones are guessable.
const (
	minTokenLen    = 16
	minPasswordLen = 12
)

// QueuesPath is where asynq's web UI (asynqmon) is mounted.
const QueuesPath = "/queues"

//go:embed web
var webFS embed.FS

// ServerConfig configures a Server. The zero value means defaults.
type ServerConfig struct {
	// Addr is the TCP address Run listens on. Default DefaultAddr
	// (127.0.0.1:8090). A non-loopback address needs a credential.
	Addr string
	// Token, if set, is a bearer token of the reader role (RoleReader:
	// the reports, and the queues UI read-only), and a secret of the
	// dashboard's sign-in form. At least 16 bytes. Default "": none.
	Token string
	// BasicUser and BasicPassword, if set, are HTTP basic auth credentials
	// of the reader role. The password is at least 12 bytes. Default "":
	// none.
	BasicUser     string
	BasicPassword string
	// AdminToken, AdminBasicUser and AdminBasicPassword are the same for
	// the admin role (RoleAdmin: a reader's rights, and changing tasks
	// and queues in the queues UI). They must differ from the reader's.
	// Default "": no admin, so no one can change tasks.
	AdminToken         string
	AdminBasicUser     string
	AdminBasicPassword string
	// Queues is the Redis of asynq, whose web UI (asynqmon) is mounted at
	// QueuesPath behind the same auth: read-only for readers, writable for
	// admins. Default nil: not mounted.
	Queues asynq.RedisConnOpt
	// QueuesReadOnly keeps the queues UI read-only for admins too.
	// Default false.
	QueuesReadOnly bool
	// AuthFailureLimit is how many failed authentications (bearer, basic
	// auth, sign-in form) one client address makes before it must wait:
	// 1 s after the next failure, twice as long after each further one,
	// up to 15 min; meanwhile its credentials are answered 429 with
	// Retry-After, unchecked. An address is forgotten an hour after its
	// last failure. Default DefaultAuthFailureLimit (10); negative: no
	// limit.
	AuthFailureLimit int
	// TrustedProxies are the addresses of reverse proxies in front of the
	// server: from them, the client is the rightmost address of
	// X-Forwarded-For that is not one of theirs. Default none: the
	// client is the TCP peer, and X-Forwarded-For is ignored.
	TrustedProxies []netip.Prefix
	// Metrics, if set, receives the server's Prometheus collectors
	// (nudge_report_auth_failures_total and others).
	Metrics prometheus.Registerer
	// Sessions records sign-outs and RevokeAllSessions, so that a signed
	// out session cookie is refused. NewRedisSessions shares them between
	// replicas and across restarts. Default: this process's memory (a
	// sign-out counts on this server until it restarts).
	Sessions Sessions
	// QueryTimeout bounds the database and Redis work of one request.
	// Default 30s.
	QueryTimeout time.Duration
	// ShutdownTimeout is how long Run lets requests in flight finish
	// after its context is done. Default 10s.
	ShutdownTimeout time.Duration
	// Logger receives the server's logs. Default slog.Default().
	Logger *slog.Logger
	// Now tells the time: relative times ("-24h", "now") count from it.
	// Default time.Now.
	Now func() time.Time
}

// Server serves the reports of a Store over HTTP: the JSON and CSV API
// under /api, the dashboard at /, asynqmon at /queues, /healthz. Start it
// with Run (or Serve), then Close it.
type Server struct {
	store *Store
	cfg   ServerConfig
	log   *slog.Logger
	auth  *auth
	// queues is the read-only queues UI; queuesRW the writable one, for
	// admins (nil without admin credentials or with QueuesReadOnly).
	queues   *queuesUI
	queuesRW *queuesUI
	limiter  *limiter
	authMet  authMetrics
	handler  http.Handler
	login    *template.Template
	assets   fs.FS
}

// NewServer returns a Server of store's reports. It refuses (ErrNoAuth) a
// non-loopback Addr without Token or basic auth.
func NewServer(store *Store, cfg ServerConfig) (*Server, error) {
	if store == nil {
		return nil, fmt.Errorf("%w: a Store is required", ErrConfig)
	}
	cfg.Addr = cmp.Or(cfg.Addr, DefaultAddr)
	if cfg.QueryTimeout < 0 || cfg.ShutdownTimeout < 0 {
		return nil, fmt.Errorf("%w: negative timeout", ErrConfig)
	}
	cfg.QueryTimeout = cmp.Or(cfg.QueryTimeout, DefaultQueryTimeout)
	cfg.ShutdownTimeout = cmp.Or(cfg.ShutdownTimeout, DefaultShutdownTimeout)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sessions == nil {
		cfg.Sessions = newMemorySessions(cfg.Now)
	}
	cfg.AuthFailureLimit = cmp.Or(cfg.AuthFailureLimit, DefaultAuthFailureLimit)
	if err := checkCredentials(cfg); err != nil {
		return nil, err
	}
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("%w: listen address %q: %w", ErrConfig, cfg.Addr, err)
	}
	s := &Server{
		store: store,
		cfg:   cfg,
		log:   cfg.Logger,
		auth:  newAuth(cfg),
	}
	s.limiter = newLimiter(cfg.AuthFailureLimit, cfg.Now)
	s.authMet = newAuthMetrics(cfg.Metrics, s.limiter)
	if !s.auth.enabled() && !isLoopbackHost(host) {
		return nil, noAuthError(cfg.Addr)
	}
	s.assets, err = fs.Sub(webFS, "web")
	if err != nil {
		return nil, err
	}
	s.login, err = template.ParseFS(s.assets, "login.html")
	if err != nil {
		return nil, err
	}
	if cfg.Queues != nil {
		s.queues, err = newQueuesUI(asynqmon.Options{RootPath: QueuesPath, RedisConnOpt: cfg.Queues, ReadOnly: true})
		if err != nil {
			return nil, err
		}
		if (cfg.AdminToken != "" || cfg.AdminBasicUser != "") && !cfg.QueuesReadOnly {
			s.queuesRW, err = newQueuesUI(asynqmon.Options{RootPath: QueuesPath, RedisConnOpt: cfg.Queues})
			if err != nil {
				_ = s.queues.Close()
				return nil, err
			}
		}
	}
	s.handler = s.routes()
	return s, nil
}

// Handler returns the server's HTTP handler, for tests and for embedding
// in another server.
func (s *Server) Handler() http.Handler { return s.handler }

// Close releases the Redis connections of the queues UI.
func (s *Server) Close() error {
	var errs []error
	for _, q := range []*queuesUI{s.queues, s.queuesRW} {
		if q != nil {
			errs = append(errs, q.Close())
		}
	}
	return errors.Join(errs...)
}

// Run listens on the configured address and serves until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Serve serves on ln until ctx is done, then lets the requests in flight
// finish for up to ShutdownTimeout. It closes ln. Without auth it refuses
// (ErrNoAuth) a listener whose address is not loopback.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	if !s.auth.enabled() {
		if tcp, ok := ln.Addr().(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
			_ = ln.Close()
			return noAuthError(ln.Addr().String())
		}
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      s.cfg.QueryTimeout + 30*time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.log.Info("report server listening", "addr", ln.Addr().String(), "auth", s.authKinds(),
		"queues", s.queues != nil, "live", s.store.HasLive())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		_ = srv.Close()
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		s.log.Warn("serve", "err", err)
	}
	s.log.Info("report server stopped")
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	authed := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// A credential in Authorization is checked only if its client
			// has not failed too often.
			var client netip.Addr
			if h := r.Header.Get("Authorization"); h != "" && s.auth.enabled() {
				client = clientAddr(r, s.cfg.TrustedProxies)
				if wait := s.limiter.wait(client); wait > 0 {
					scheme, _, _ := strings.Cut(h, " ")
					s.authMet.limited.WithLabelValues(metricMethod(strings.ToLower(scheme))).Inc()
					secs := tooMany(w, wait)
					writeError(w, http.StatusTooManyRequests, "", fmt.Sprintf("too many failed authentications from your address: retry in %d s", secs))
					return
				}
			}
			res := s.auth.authenticate(r)
			if res.err != nil {
				s.log.Error("session store", "err", res.err)
				writeError(w, http.StatusServiceUnavailable, "", "sessions cannot be checked now (the session store does not answer): retry, or use the token")
				return
			}
			if res.role == RoleNone {
				if res.method != methodNone && res.method != methodSession {
					s.authFailed(r, client, res.method)
				}
				s.auth.challenge(w, r)
				return
			}
			h.ServeHTTP(w, r.WithContext(withAuth(r.Context(), res)))
		})
	}
	api := func(pattern string, h func(http.ResponseWriter, *http.Request) error) {
		mux.Handle(pattern, authed(s.apiHandler(h)))
	}

	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.loginSubmit)
	mux.HandleFunc("POST /logout", s.logout)
	// The dashboard's code and style hold no data; the sign-in page uses
	// them too.
	files := http.FileServerFS(s.assets)
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", pageHeaders(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r) // no directory listing
			return
		}
		files.ServeHTTP(w, r)
	}))))
	mux.Handle("GET /{$}", authed(http.HandlerFunc(s.dashboard)))

	api("GET /api/series", s.apiSeries)
	api("GET /api/totals", s.apiTotals)
	api("GET /api/funnel", rangeAnswer(s, (*Store).Funnel))
	api("GET /api/effectiveness", rangeAnswer(s, (*Store).Effectiveness))
	api("GET /api/push", rangeAnswer(s, (*Store).Push))
	api("GET /api/dau", s.apiDAU)
	api("GET /api/metrics", s.apiMetrics)
	api("GET /api/dimensions", s.apiDimensions)
	api("GET /api/session", s.apiSession)
	mux.Handle("/api/", authed(s.apiHandler(func(w http.ResponseWriter, r *http.Request) error {
		writeError(w, http.StatusNotFound, "", "no such API endpoint: "+r.URL.Path)
		return nil
	})))

	if s.queues != nil {
		mux.Handle(QueuesPath, authed(http.HandlerFunc(s.queuesUI)))
		mux.Handle(QueuesPath+"/", authed(http.HandlerFunc(s.queuesUI)))
	}

	// Basic auth and the session cookie travel with cross-site requests:
	// refuse cross-origin requests that change something (asynqmon's
	// POST and DELETE, sign-in), whatever their credentials.
	var h http.Handler = http.NewCrossOriginProtection().Handler(mux)
	if !s.auth.enabled() {
		h = loopbackHostOnly(h)
	}
	return s.logRequests(commonHeaders(h))
}

// errStatus maps an error of a report to an HTTP status and a message
// safe to show.
func (s *Server) errStatus(r *http.Request, err error) (int, string, string) {
	var pe *ParamError
	switch {
	case errors.As(err, &pe):
		return http.StatusBadRequest, pe.Param, pe.Error()
	case errors.Is(err, ErrLiveBacklog):
		return http.StatusServiceUnavailable, "live", ErrLiveBacklog.Error()
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "", fmt.Sprintf("the report took longer than %s: narrow the range or use a larger step", s.cfg.QueryTimeout)
	case r.Context().Err() != nil:
		return 499, "", "client went away"
	}
	if tz, ok := unknownZone(err); ok {
		return http.StatusBadRequest, "tz", "tz: the database does not know the time zone " + tz
	}
	return http.StatusInternalServerError, "", "internal error (logged)"
}
