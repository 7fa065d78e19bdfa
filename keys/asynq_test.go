package keys_test

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/nudgehq/nudge/internal/redistest"
	"github.com/nudgehq/nudge/keys"
)

// The asynq key functions are the layout of the asynq version in go.mod:
// a task enqueued for later is a hash at AsynqTask in AsynqScheduled, its
// queue is in AsynqQueues, and every key of the queue starts with
// AsynqQueue.
func TestAsynqLayout(t *testing.T) {
	rdb, prefix := redistest.New(t)
	queue := prefix + "-layout"
	ctx := context.Background()
	opt := asynq.RedisClientOpt{Addr: redistest.Addr()}
	client := asynq.NewClient(opt)
	defer client.Close()
	insp := asynq.NewInspector(opt)
	defer insp.Close()
	t.Cleanup(func() { redistest.DeleteQueue(t, rdb, queue) })

	if _, err := client.Enqueue(asynq.NewTask("layout", []byte("x")), asynq.Queue(queue), asynq.TaskID("t1"),
		asynq.ProcessIn(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, keys.AsynqTask(queue, "t1")).Val(); n != 1 {
		t.Errorf("no task hash at %s", keys.AsynqTask(queue, "t1"))
	}
	if _, err := rdb.ZScore(ctx, keys.AsynqScheduled(queue), "t1").Result(); err != nil {
		t.Errorf("the task is not in %s: %v", keys.AsynqScheduled(queue), err)
	}
	if !rdb.SIsMember(ctx, keys.AsynqQueues, queue).Val() {
		t.Errorf("the queue is not in %s", keys.AsynqQueues)
	}
	all, err := redistest.Keys(ctx, rdb, "asynq:{"+queue+"}")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range all {
		if len(k) < len(keys.AsynqQueue(queue)) || k[:len(keys.AsynqQueue(queue))] != keys.AsynqQueue(queue) {
			t.Errorf("asynq key %s is not under %s", k, keys.AsynqQueue(queue))
		}
	}
	if len(all) < 2 {
		t.Errorf("asynq keys of the queue: %v", all)
	}
}
