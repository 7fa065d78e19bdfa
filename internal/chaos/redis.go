package chaos

// The Redis server of the restart run: started with the persistence
// deploy/README.md requires, stopped and started again on the same data.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/freeport"
)

// redisServer is a private redis-server with the documented persistence,
// stoppable and restartable on the same port and data.
type redisServer struct {
	path, dir, addr string
	cmd             *exec.Cmd
	done            chan struct{}
}

// startRedis starts a redis-server on a free port with its data in dir.
func startRedis(ctx context.Context, path, dir string) (*redisServer, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var errs []error
	for range 5 {
		port, err := freeport.Port()
		if err != nil {
			return nil, err
		}
		s := &redisServer{path: path, dir: dir, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
		conf := append([]string{"port " + strconv.Itoa(port), "bind 127.0.0.1", "dir " + dir, "daemonize no",
			"appendfilename appendonly.aof", "appenddirname appendonlydir"}, RedisPersistence...)
		if err := os.WriteFile(filepath.Join(dir, "redis.conf"), []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
			return nil, err
		}
		if err = s.start(ctx); err == nil {
			return s, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("no redis-server started: %w", errors.Join(errs...))
}

// start starts the server and waits until it answers PING (after loading
// its AOF).
func (s *redisServer) start(ctx context.Context) error {
	f, err := os.OpenFile(filepath.Join(s.dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(s.path, filepath.Join(s.dir, "redis.conf"))
	cmd.Stdout, cmd.Stderr = f, f
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start redis-server: %w", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() {
		_ = cmd.Wait()
		f.Close()
		close(s.done)
	}()
	c := redis.NewClient(&redis.Options{Addr: s.addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := c.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		select {
		case <-s.done:
			s.cmd = nil
			return fmt.Errorf("redis-server %s exited: %v\n%s", s.addr, err, tail(filepath.Join(s.dir, "redis.log"), 10))
		case <-ctx.Done():
			s.kill()
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("redis-server %s does not answer: %w", s.addr, err)
		}
	}
}

// stop sends the server sig and waits for it to exit; after timeout it is
// killed and stop fails. SIGTERM is a clean shutdown, which writes and
// fsyncs the AOF, and must succeed.
func (s *redisServer) stop(sig syscall.Signal, timeout time.Duration) error {
	if s.cmd == nil {
		return nil
	}
	if err := s.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-s.done:
	case <-time.After(timeout):
		s.kill()
		return fmt.Errorf("redis-server did not shut down within %s", timeout)
	}
	defer func() { s.cmd = nil }()
	if st := s.cmd.ProcessState; sig == syscall.SIGTERM && !st.Success() {
		return fmt.Errorf("redis-server shut down with %s:\n%s", st, tail(filepath.Join(s.dir, "redis.log"), 10))
	}
	return nil
}

// kill ends the server at once, if it runs.
func (s *redisServer) kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// infoField returns a field of an INFO reply.
func infoField(info, name string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
