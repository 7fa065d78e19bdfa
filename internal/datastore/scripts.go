package datastore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Script is a Lua script that keeps its source and the component that runs
// it, so that a command can check at start that its Redis user may run
// every command its scripts call (CheckScripts). A command missing from a
// user's ACL fails a script in the middle, after the commands before it
// were applied: a batch acknowledged without its counters. Checked at
// start, it is a deploy-time error instead.
type Script struct {
	*redis.Script
	src string
}

var (
	scriptsMu sync.Mutex
	scripts   = map[string][]string{} // component -> sources
)

// NewScript returns the script of src, run by component ("ingest",
// "scheduler", "worker", "flusher").
func NewScript(component, src string) Script {
	scriptsMu.Lock()
	scripts[component] = append(scripts[component], src)
	scriptsMu.Unlock()
	return Script{Script: redis.NewScript(src), src: src}
}

// quoted finds the quoted upper-case words of a Lua source: the command
// names of redis.call, and arguments such as 'NX' that are not commands.
var quoted = regexp.MustCompile(`'([A-Z][A-Z]+)'`)

// ScriptCommands returns the words of the components' scripts that may be
// command names, sorted.
func ScriptCommands(components ...string) []string {
	scriptsMu.Lock()
	defer scriptsMu.Unlock()
	var out []string
	for _, c := range components {
		for _, src := range scripts[c] {
			for _, m := range quoted.FindAllStringSubmatch(src, -1) {
				out = append(out, m[1])
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// ErrCannotCheck is returned by CheckScripts when Redis cannot tell a
// user's permissions to a script (before Redis 7.0).
var ErrCannotCheck = errors.New("datastore: this Redis cannot check a user's permissions from a script (redis.acl_check_cmd needs Redis 7.0)")

// aclCheck asks, for each ARGV that names a command, whether the user may
// run it on KEYS[1]; a word that is not a command is skipped. Returns the
// denied commands, or -1 when Redis has no acl_check_cmd.
var aclCheck = redis.NewScript(`
if redis.acl_check_cmd == nil then return -1 end
local denied = {}
for i = 1, #ARGV do
  local ok, allowed = pcall(redis.acl_check_cmd, ARGV[i], KEYS[1])
  if ok and not allowed then denied[#denied + 1] = ARGV[i] end
end
return denied`)

// CheckScripts returns an error naming the commands of the components'
// scripts that the connected Redis user may not run on key (a key of the
// kind the scripts write). It needs EVAL, as the scripts do.
func CheckScripts(ctx context.Context, rdb redis.UniversalClient, key string, components ...string) error {
	cmds := ScriptCommands(components...)
	args := make([]any, len(cmds))
	for i, c := range cmds {
		args[i] = c
	}
	res, err := aclCheck.Run(ctx, rdb, []string{key}, args...).Result()
	if err != nil {
		return fmt.Errorf("check the Redis user's permissions for the %s scripts: %w", strings.Join(components, " and "), err)
	}
	if n, ok := res.(int64); ok && n == -1 {
		return ErrCannotCheck
	}
	list, _ := res.([]any)
	if len(list) == 0 {
		return nil
	}
	denied := &DeniedError{Key: key, Components: components}
	for _, d := range list {
		denied.Commands = append(denied.Commands, strings.ToLower(fmt.Sprint(d)))
	}
	return denied
}

// DeniedError is CheckScripts' answer when the Redis user may not run
// some of the commands the scripts call.
type DeniedError struct {
	Commands   []string // lower case: "hincrby"
	Key        string
	Components []string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("the Redis user may not run +%s on %s, which the %s scripts call: a script would fail halfway; grant them (deploy/README.md lists each service's ACL)",
		strings.Join(e.Commands, " +"), e.Key, strings.Join(e.Components, " and "))
}

// RequireScripts runs CheckScripts once Redis answers, trying again every
// second while it does not (a command may start before its Redis). It
// returns the check's error, or nil; a Redis that cannot check is logged
// and let through.
func RequireScripts(ctx context.Context, rdb redis.UniversalClient, log *slog.Logger, key string, components ...string) error {
	for {
		err := CheckScripts(ctx, rdb, key, components...)
		var rerr redis.Error
		var denied *DeniedError
		switch {
		case err == nil:
			return nil
		case errors.Is(err, ErrCannotCheck):
			log.Warn("Redis user's permissions not checked", "err", err)
			return nil
		case !errors.As(err, &rerr) && !errors.As(err, &denied):
			// Not an answer from Redis: it is not there yet.
			log.Warn("checking the Redis user's permissions; waiting for Redis", "err", err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
			continue
		}
		return err
	}
}
