package main

// The demo's processes: started, waited for, stopped.

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan error
}

func waitHTTP(ctx context.Context, u string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET %s: %s", u, res.Status)
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// start runs one of the built commands with its output in a log file.
func (d *demo) start(name string, env []string, args ...string) error {
	bin, _, _ := strings.Cut(name, "-") // ingest-1 runs ingest
	logf, err := os.Create(filepath.Join(d.logs, name+".log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(filepath.Join(d.bin, bin), args...)
	cmd.Env = append(serviceEnv(os.Environ()), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // Ctrl-C reaches the demo, which stops them in order
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan error, 1)}
	go func() {
		p.done <- cmd.Wait()
		logf.Close()
	}()
	d.procs = append(d.procs, p)
	return nil
}

// stopAll stops the processes in reverse order of start: traffic first,
// then the pipeline, the sandbox last. SIGTERM, then SIGKILL after 30s.
func (d *demo) stopAll() error {
	var failed []string
	for i := len(d.procs) - 1; i >= 0; i-- {
		p := d.procs[i]
		select {
		case err := <-p.done:
			if err != nil {
				failed = append(failed, p.name+" had exited: "+err.Error())
			}
			continue
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-p.done:
			if err != nil {
				failed = append(failed, p.name+": "+err.Error())
			}
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			failed = append(failed, p.name+": did not stop within 30s of SIGTERM")
		}
	}
	d.say("stopped everything the demo started")
	if len(failed) > 0 {
		return fmt.Errorf("processes failed (see %s): %s", d.logs, strings.Join(failed, "; "))
	}
	return nil
}

func waitEnvFile(ctx context.Context, path string) ([]string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		f, err := os.Open(path)
		if err == nil {
			defer f.Close()
			var env []string
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if line := strings.TrimSpace(sc.Text()); line != "" && !strings.HasPrefix(line, "#") {
					env = append(env, line)
				}
			}
			return env, sc.Err()
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("the push sandbox did not write %s", path)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
