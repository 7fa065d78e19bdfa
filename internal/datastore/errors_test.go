package datastore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/redistest"
)

// The classifiers read the replies of a real Redis.
func TestErrorCodes(t *testing.T) {
	rdb, prefix := redistest.New(t)
	ctx := context.Background()
	stream := prefix + ":s"

	err := rdb.XReadGroup(ctx, &redis.XReadGroupArgs{Group: "g", Consumer: "c", Streams: []string{stream, ">"}, Count: 1, Block: -1}).Err()
	if !datastore.HasCode(err, datastore.CodeNoGroup) || datastore.Refused(err) {
		t.Errorf("XREADGROUP of no group: %v: code %q", err, datastore.Code(err))
	}
	_, err = rdb.XInfoGroups(ctx, stream).Result()
	if !datastore.NoSuchKey(err) || datastore.Code(err) != datastore.CodeErr {
		t.Errorf("XINFO GROUPS of no stream: %v", err)
	}
	if err := rdb.XGroupCreateMkStream(ctx, stream, "g", "0").Err(); err != nil {
		t.Fatal(err)
	}
	err = rdb.XGroupCreateMkStream(ctx, stream, "g", "0").Err()
	if !datastore.HasCode(err, datastore.CodeBusyGroup) {
		t.Errorf("XGROUP CREATE twice: %v", err)
	}
	err = rdb.EvalSha(ctx, "0000000000000000000000000000000000000000", nil).Err()
	if !datastore.HasCode(err, datastore.CodeNoScript) || !datastore.Refused(err) {
		t.Errorf("EVALSHA of no script: %v", err)
	}
	err = rdb.Eval(ctx, "return redis.error_reply('"+datastore.CodeLease+" lease of x not held by y')", nil).Err()
	if !datastore.HasCode(err, datastore.CodeLease) || datastore.HasCode(err, datastore.CodeOrder) {
		t.Errorf("a script's own code: %v", err)
	}
	// Not replies: no code.
	for _, e := range []error{nil, redis.Nil, context.Canceled, errors.New("OOM in a message of ours"),
		fmt.Errorf("dial tcp: %w", os.ErrDeadlineExceeded)} {
		if c := datastore.Code(e); c != "" || datastore.Refused(e) {
			t.Errorf("Code(%v) = %q", e, c)
		}
	}
	// Out of memory under noeviction, on a server of the test's own:
	// refused, and wrapped too.
	own, _ := redistest.Private(t)
	if err := own.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	err = own.Set(ctx, "k", "v", time.Minute).Err()
	if !datastore.Refused(fmt.Errorf("publish: %w", err)) || datastore.Code(err) != "OOM" {
		t.Errorf("a write over maxmemory: %v", err)
	}
}

// Every code a script of the repository fails with is declared, and every
// declared code is used by a script.
func TestScriptCodesAreDeclared(t *testing.T) {
	re := regexp.MustCompile(`error_reply\('([A-Z]+) `)
	used := map[string]bool{}
	err := filepath.WalkDir("../..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "node_modules" || d.Name() == ".git") {
			return filepath.SkipDir
		}
		if filepath.Ext(path) != ".lua" {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllStringSubmatch(string(b), -1) {
			used[m[1]] = true
			if !slices.Contains(datastore.ScriptCodes, m[1]) {
				t.Errorf("%s fails with %s, which datastore does not declare", path, m[1])
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range datastore.ScriptCodes {
		if !used[c] {
			t.Errorf("%s is declared but no script fails with it", c)
		}
	}
}
