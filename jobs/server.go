package jobs

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// ServerConfig configures a Server. The zero value means defaults.
type ServerConfig struct {
	// Concurrency is how many tasks run at once: a task holds one
	// reminder, or up to BatchSize of a shard due in the same second, and
	// may wait up to a second for its due time. Default 200.
	Concurrency int
	// DelayedCheckInterval is how often due reminders are moved to the
	// queue (asynq's DelayedTaskCheckInterval). Default 200ms.
	DelayedCheckInterval time.Duration
	// ShutdownTimeout is how long running tasks may take to finish once
	// Run's context is done; the rest are handed back to the queue.
	// Default 25s.
	ShutdownTimeout time.Duration
	// RedisWait bounds how long a task waits for Redis to answer again
	// before handing its result to asynq (see NewServer). Default 20s:
	// less than asynq's 30 s task lease, which is not extended while
	// Redis is away.
	RedisWait time.Duration
	// Started, if set, is called once the server takes tasks (to log it,
	// say).
	Started func()
}

// Defaults of ServerConfig, for the worker's flags too.
const (
	DefaultConcurrency          = 200
	DefaultDelayedCheckInterval = 200 * time.Millisecond
)

func (c ServerConfig) withDefaults() ServerConfig {
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.DelayedCheckInterval <= 0 {
		c.DelayedCheckInterval = DefaultDelayedCheckInterval
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = 25 * time.Second
	}
	if c.RedisWait <= 0 {
		c.RedisWait = 20 * time.Second
	}
	return c
}

// Server runs a Worker's reminders from its asynq queue: asynq's server,
// with Nudge's settings, its own Redis connections, and its logs in slog.
type Server struct {
	srv *asynq.Server
	mux *asynq.ServeMux
	rdb redis.UniversalClient // asynq's own
	log *slog.Logger
	cfg ServerConfig
}

// NewServer returns a Server of w's reminders, connected through conn.
//
// Once a task has run, the Server waits while Redis does not answer
// asynq's connections, up to RedisWait, before handing the result to
// asynq. asynq records the result in Redis: the task moves to completed,
// or to retry when it failed (as it does when Redis went away under it).
// A result asynq cannot record leaves the task active until its lease has
// expired and asynq's recoverer, which runs once a minute, finds it: the
// reminder would go out one to two minutes late. (asynq v0.26 does retry
// that write in the background, but with a context it has already
// cancelled, so those retries never succeed.) With the wait, a reminder
// that failed because Redis restarted is retried a few seconds after
// Redis is back. The ping goes through asynq's own client: after a run of
// failed dials, go-redis fails a pool's commands at once until a probe,
// once a second, reaches the server again, so another client answering
// says nothing of asynq's.
func NewServer(w *Worker, conn asynq.RedisConnOpt, cfg ServerConfig) (*Server, error) {
	cfg = cfg.withDefaults()
	c, ok := conn.MakeRedisClient().(redis.UniversalClient)
	if !ok {
		return nil, fmt.Errorf("jobs: asynq made a Redis client of type %T", conn.MakeRedisClient())
	}
	log := w.cfg.Logger
	srv := asynq.NewServerFromRedisClient(c, asynq.Config{
		Concurrency:              cfg.Concurrency,
		Queues:                   map[string]int{w.cfg.Queue: 1},
		DelayedTaskCheckInterval: cfg.DelayedCheckInterval,
		// How soon an idle worker looks again for tasks moved to the queue
		// (asynq's default is 1s, which would add up to a second to every
		// reminder's lateness); an empty poll is one cheap round trip.
		TaskCheckInterval: 100 * time.Millisecond,
		RetryDelayFunc:    RetryDelay,
		ErrorHandler:      asynq.ErrorHandlerFunc(w.HandleError),
		ShutdownTimeout:   cfg.ShutdownTimeout,
		Logger:            asynqLogger{log},
		LogLevel:          asynq.WarnLevel,
	})
	mux := asynq.NewServeMux()
	mux.Use(awaitRedis(func(ctx context.Context) error { return c.Ping(ctx).Err() }, cfg.RedisWait, log))
	mux.Handle(TypeReminder, w)
	return &Server{srv: srv, mux: mux, rdb: c, log: log, cfg: cfg}, nil
}

// Run processes reminders until ctx is done; then it stops taking tasks,
// lets the running ones finish (up to ShutdownTimeout) and hands the rest
// back to the queue.
func (s *Server) Run(ctx context.Context) error {
	if err := s.srv.Start(s.mux); err != nil {
		return err
	}
	if s.cfg.Started != nil {
		s.cfg.Started()
	}
	<-ctx.Done()
	s.srv.Shutdown()
	return nil
}

// Close closes asynq's Redis connections. Call it after Run returned.
func (s *Server) Close() error { return s.rdb.Close() }

// awaitRedis is the middleware of NewServer's wait: once a task has run,
// it pings until Redis answers, up to limit, before returning the task's
// result.
func awaitRedis(ping func(context.Context) error, limit time.Duration, log *slog.Logger) asynq.MiddlewareFunc {
	return func(h asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			err := h.ProcessTask(ctx, t)
			deadline := time.Now().Add(limit)
			for wait, logged := 100*time.Millisecond, false; ctx.Err() == nil; wait = min(2*wait, time.Second) {
				pctx, cancel := context.WithTimeout(ctx, time.Second)
				perr := ping(pctx)
				cancel()
				if perr == nil {
					if logged {
						log.Info("Redis answers again; the task's result can be recorded", "type", t.Type())
					}
					break
				}
				left := time.Until(deadline)
				if left <= 0 {
					log.Warn("Redis still does not answer; handing the task's result to asynq anyway", "type", t.Type(), "err", perr)
					break
				}
				if !logged {
					log.Warn("Redis does not answer; waiting for it so that asynq can record the task's result",
						"type", t.Type(), "failed", err != nil, "err", perr)
					logged = true
				}
				select {
				case <-ctx.Done():
				case <-time.After(min(wait, left)):
				}
			}
			return err
		})
	}
}

// asynqLogger sends asynq's logs to slog.
type asynqLogger struct{ log *slog.Logger }

func (l asynqLogger) Debug(args ...any) { l.log.Debug(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Info(args ...any)  { l.log.Info(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Warn(args ...any)  { l.log.Warn(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Error(args ...any) { l.log.Error(fmt.Sprint(args...), "component", "asynq") }
func (l asynqLogger) Fatal(args ...any) { l.log.Error(fmt.Sprint(args...), "component", "asynq") }
