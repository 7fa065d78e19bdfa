package jobs_test

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nudgehq/nudge/event"
	"github.com/nudgehq/nudge/push"
	"github.com/nudgehq/nudge/push/sandbox"
)

// readyUsers registers n users with one FCM device each, through ingest,
// and returns their tokens.
func readyUsers(b *testing.B, e *env, n int) []string {
	b.Helper()
	tokens := make([]string, n)
	var evs []*event.Event
	for i := range tokens {
		tokens[i] = sandbox.NewDeviceToken(event.PlatformFCM)
		evs = append(evs, device("user"+strconv.Itoa(i), event.PlatformFCM, tokens[i]))
	}
	if _, err := e.pub.PublishBatch(context.Background(), evs); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var got int
		_ = e.db.QueryRow(context.Background(), "SELECT count(*) FROM devices").Scan(&got)
		if got == n {
			return tokens
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d devices stored", got, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// BenchmarkPushThroughput measures reminders pushed per second through the
// whole worker (asynq, state checks, registry, sent sets, counters) against
// the push sandbox, and the ratio to the raw FCM client sending the same
// pushes again (each delivery's message to its device) with the same
// concurrency to the same sandbox; raw-minimal is the raw client sending a
// bare title and body.
func BenchmarkPushThroughput(b *testing.B) {
	const n = 1000
	const concurrency = 20
	var workerTime, rawTime, minimalTime time.Duration
	for i := 0; i < b.N; i++ {
		e := setupB(b, options{stages: []time.Duration{time.Second}, concurrency: concurrency, cacheTTL: 30 * time.Second})
		tokens := readyUsers(b, e, n)

		// Through the worker: n episodes open at once, due in a second.
		var evs []*event.Event
		for u := 0; u < n; u++ {
			evs = append(evs, msg("conv"+strconv.Itoa(u), "m", "sender", "user"+strconv.Itoa(u)))
		}
		if _, err := e.pub.PublishBatch(context.Background(), evs); err != nil {
			b.Fatal(err)
		}
		// Time from the first push to the last, so the delay and the
		// scheduling are not counted.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		if err := e.sb.WaitFor(ctx, func(d []sandbox.Delivery) bool { return len(d) >= n }); err != nil {
			b.Fatal(err)
		}
		cancel()
		ds := e.sb.Deliveries()
		workerTime += ds[len(ds)-1].Time.Sub(ds[0].Time)
		e.sb.Reset()

		// Raw: the FCM client alone, the same n pushes, concurrency
		// goroutines; then n pushes of a bare title and body.
		fcm := e.rawFCM(b)
		rawTime += rawSends(b, fcm, concurrency, n, func(i int) (push.Message, string) { return ds[i].Message(), ds[i].Token })
		size := map[string]int{}
		for _, d := range ds {
			size[d.Token] = d.PayloadBytes
		}
		for _, d := range e.sb.Deliveries() {
			if d.PayloadBytes != size[d.Token] {
				b.Fatalf("raw push of %d bytes, the worker's was %d", d.PayloadBytes, size[d.Token])
			}
		}
		e.sb.Reset()
		minimalTime += rawSends(b, fcm, concurrency, n, func(i int) (push.Message, string) { return push.Message{Title: "t", Body: "b"}, tokens[i] })
	}
	b.ReportMetric(float64(n*b.N)/workerTime.Seconds(), "pushes/s")
	b.ReportMetric(float64(n*b.N)/rawTime.Seconds(), "raw-pushes/s")
	b.ReportMetric(rawTime.Seconds()/workerTime.Seconds(), "ratio")
	b.ReportMetric(float64(n*b.N)/minimalTime.Seconds(), "raw-minimal-pushes/s")
}

// rawSends sends n pushes with fcm alone (the i-th: pushNo(i)) from
// concurrency goroutines and returns how long they took.
func rawSends(b *testing.B, fcm push.Sender, concurrency, n int, pushNo func(i int) (push.Message, string)) time.Duration {
	start := time.Now()
	var wg sync.WaitGroup
	next := make(chan int)
	for range concurrency {
		wg.Go(func() {
			for i := range next {
				msg, tok := pushNo(i)
				if r, err := fcm.Send(context.Background(), msg, []string{tok}); err != nil || r[0].Outcome != push.Delivered {
					b.Errorf("raw push: %+v, %v", r, err)
				}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return time.Since(start)
}

// BenchmarkFireLateness schedules reminders due at spread-out times with the
// default settings (DelayedTaskCheckInterval 1s) and reports how late the
// pushes reached the sandbox after their due time, and how many came early.
func BenchmarkFireLateness(b *testing.B) {
	const n = 300
	var late []time.Duration
	early := 0
	for i := 0; i < b.N; i++ {
		e := setupB(b, options{stages: []time.Duration{3 * time.Second}, checkInterval: time.Second, concurrency: 20, cacheTTL: 30 * time.Second})
		tokens := readyUsers(b, e, n)
		due := map[string]time.Time{}
		for u := 0; u < n; u++ {
			at := time.Now()
			if _, err := e.pub.Publish(context.Background(), msg("conv"+strconv.Itoa(u), "m", "sender", "user"+strconv.Itoa(u))); err != nil {
				b.Fatal(err)
			}
			due[tokens[u]] = at.Add(3 * time.Second) // the scheduler's due is later still: ingest time + delay
			time.Sleep(7 * time.Millisecond)         // spread the due times over two seconds
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := e.sb.WaitFor(ctx, func(d []sandbox.Delivery) bool { return len(d) >= n }); err != nil {
			b.Fatal(err)
		}
		cancel()
		for _, d := range e.sb.Deliveries() {
			l := d.Time.Sub(due[d.Token])
			if l < 0 {
				early++
			}
			late = append(late, l)
		}
	}
	slices.Sort(late)
	b.ReportMetric(float64(late[len(late)/2].Milliseconds()), "p50-late-ms")
	b.ReportMetric(float64(late[len(late)*99/100].Milliseconds()), "p99-late-ms")
	b.ReportMetric(float64(early), "early")
}

// BenchmarkBurst: one message to a group of 5,000 members with a device
// each (a third APNs), whose first reminders fall due together; reports
// pushes/s from the first push to the last, and how late the first push,
// the median and the 99th percentile came after the due time. Run it with
// -cpuprofile to see where a burst's time goes.
func BenchmarkBurst(b *testing.B) {
	const n = 5000
	for i := 0; i < b.N; i++ {
		e := setupB(b, options{stages: []time.Duration{2 * time.Second}, concurrency: 200, cacheTTL: 30 * time.Second})
		users := make([]string, n)
		var evs []*event.Event
		for u := range users {
			users[u] = strconv.FormatInt(int64(100000+u), 36)
			platform := event.PlatformFCM
			if u%3 == 2 {
				platform = event.PlatformAPNs
			}
			evs = append(evs, device(users[u], platform, sandbox.NewDeviceToken(platform)))
		}
		if _, err := e.pub.PublishBatch(context.Background(), evs); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(time.Minute)
		for got := 0; got < n; {
			_ = e.db.QueryRow(context.Background(), "SELECT count(*) FROM devices").Scan(&got)
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d devices stored", got, n)
			}
			time.Sleep(50 * time.Millisecond)
		}
		published := time.Now()
		if _, err := e.pub.Publish(context.Background(), msg("burst", "m1", "sender", users...)); err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		if err := e.sb.WaitFor(ctx, func(d []sandbox.Delivery) bool { return len(d) >= n }); err != nil {
			b.Fatal(err)
		}
		cancel()
		ds := e.sb.Deliveries()
		b.ReportMetric(float64(n)/ds[len(ds)-1].Time.Sub(ds[0].Time).Seconds(), "pushes/s")
		// Lateness after publish time + the delay: an upper bound, as the
		// due time counts from when ingest applied the message.
		due := published.Add(2 * time.Second)
		late := make([]time.Duration, len(ds))
		for j, d := range ds {
			late[j] = d.Time.Sub(due)
		}
		slices.Sort(late)
		b.ReportMetric(float64(late[0].Milliseconds()), "first-late-ms")
		b.ReportMetric(float64(late[len(late)/2].Milliseconds()), "p50-late-ms")
		b.ReportMetric(float64(late[len(late)*99/100].Milliseconds()), "p99-late-ms")
	}
}
