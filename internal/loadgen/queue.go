package loadgen

import "github.com/nudgehq/nudge/event"

// taskKind is what a queued task emits when it is due.
type taskKind uint8

const (
	taskRead      taskKind = iota // a member reads a conversation
	taskDuplicate                 // an event is published again
	taskRegister                  // a replaced device token is registered
	taskOpened                    // a user opens a reminder push (notification.opened)
)

// task is an event the generator owes at a later time.
type task struct {
	due  int64  // unix nanoseconds of the run's clock
	seq  uint64 // order of scheduling: breaks ties, identifies a pending read
	kind taskKind
	conv int32        // taskRead: the conversation's index
	pos  int32        // taskRead: the reader's position among its members
	upto string       // taskRead: the message read up to; "" is the newest
	ev   *event.Event // taskDuplicate, taskRegister, taskOpened
}

// queue is a min-heap of tasks by (due, seq): the same tasks always come
// out in the same order.
type queue []task

func (q queue) less(i, j int) bool {
	return q[i].due < q[j].due || q[i].due == q[j].due && q[i].seq < q[j].seq
}

func (q *queue) push(t task) {
	*q = append(*q, t)
	h := *q
	for i := len(h) - 1; i > 0; {
		parent := (i - 1) / 2
		if !h.less(i, parent) {
			break
		}
		h[i], h[parent] = h[parent], h[i]
		i = parent
	}
}

// peek returns the earliest task; the queue must not be empty.
func (q queue) peek() *task { return &q[0] }

// pop removes and returns the earliest task; the queue must not be empty.
func (q *queue) pop() task {
	h := *q
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h[last] = task{} // drop references
	h = h[:last]
	h.down(0)
	*q = h
	return top
}

// filter keeps the tasks for which keep is true, in heap order.
func (q *queue) filter(keep func(*task) bool) {
	h := *q
	n := 0
	for i := range h {
		if keep(&h[i]) {
			h[n] = h[i]
			n++
		}
	}
	clear(h[n:])
	h = h[:n]
	for i := n/2 - 1; i >= 0; i-- {
		h.down(i)
	}
	*q = h
}

func (q queue) down(i int) {
	for {
		l, r, m := 2*i+1, 2*i+2, i
		if l < len(q) && q.less(l, m) {
			m = l
		}
		if r < len(q) && q.less(r, m) {
			m = r
		}
		if m == i {
			return
		}
		q[i], q[m] = q[m], q[i]
		i = m
	}
}
