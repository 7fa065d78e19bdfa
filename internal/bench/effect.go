package bench

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nudgehq/nudge/internal/loadgen"
	"github.com/nudgehq/nudge/report"
)

// Simulated reactions of the effectiveness step: the share of pushes a
// user opens, and of those after which the user reads the conversation.
const (
	effectOpenRate     = 0.3
	effectPushReadRate = 0.4
)

// effectSendEvery is how often a user of the effectiveness step sends a
// message, on average: 3,000 users make 200 events/s.
const effectSendEvery = 15 * time.Second

// effectApp is the app of the effectiveness step's traffic, so that its
// report leaves out the other steps' pushes.
const effectApp = "effect"

// measureEffectiveness runs load-generator traffic whose users react to
// the pushes their devices get (opens and reads, 0.2 to 3 s later) through
// the pipeline, every first reminder due a second after its message, and
// reads the first stage's effectiveness as an admin does: the report
// store, live, for the traffic's app. Regular reads (a third of the
// recipients, some seconds later) convert too when they come after a push.
//
// Each user sends a message every effectSendEvery on average: a user's
// own message reads the conversation, so at a much higher rate per user
// (200 events/s over 20 users, the smoke run's size once) the sender's
// read closes nearly every episode before its first reminder is due.
func (p *pipeline) measureEffectiveness(ctx context.Context, users int, traffic time.Duration, res *Result) error {
	from := time.Now()
	gen, err := loadgen.New(p.rdb, loadgen.Config{
		Seed: 3, IDPrefix: "eff" + strconv.FormatInt(time.Now().UnixNano()%1e9, 10), Apps: []string{effectApp},
		Users: users, Conversations: max(10, users/3), DeviceFraction: 1, PrefsFraction: -1, PresenceRate: -1,
		ReminderDelay: time.Second, ReadProbability: 0.3, ReadDelay: 5 * time.Second, ReadDelayMax: 30 * time.Second,
		TimeScale: 0.1, PushFeed: p.sb.ControlURL(), OpenRate: effectOpenRate, PushReadRate: effectPushReadRate,
		Rate: float64(users) / effectSendEvery.Seconds(), Duration: traffic, Tail: 6 * time.Second, Keyspace: p.ks,
	})
	if err != nil {
		return err
	}
	st, err := gen.Run(ctx)
	if err != nil {
		return err
	}
	if err := p.alive(); err != nil {
		return err
	}
	store, err := report.NewStore(p.db, report.StoreConfig{Redis: p.rdb, Keyspace: p.ks})
	if err != nil {
		return err
	}
	// Everything published applied, and the worker's last pushes counted.
	var stage report.StageEffect
	stable, last := 0, report.StageEffect{}
	deadline := time.Now().Add(time.Minute)
	for stable < 3 {
		if time.Now().After(deadline) {
			return fmt.Errorf("the effectiveness report did not settle within a minute: %+v", stage)
		}
		time.Sleep(500 * time.Millisecond)
		caughtUp, err := lagBelow(ctx, p.rdb, p.ks, 1)
		if err != nil {
			return err
		}
		eff, err := store.Effectiveness(ctx, report.RangeQuery{From: from, To: time.Now().Add(time.Minute),
			Filter: report.Filter{App: effectApp}, Live: true})
		if err != nil {
			return err
		}
		stage = report.StageEffect{}
		for _, s := range eff.Stages {
			if s.Stage == 1 {
				stage = s
			}
		}
		if caughtUp && stage.Pushed > 0 && stage == last {
			stable++
		} else {
			stable = 0
		}
		last = stage
	}
	res.EffectPushed, res.EffectOpened, res.EffectConverted = stage.Pushed, stage.Opened, stage.Converted
	res.EffectOpenRate, res.EffectConversionRate = round(stage.OpenRate, 3), round(stage.ConversionRate, 3)
	res.EffectSimOpenRate, res.EffectSimPushReadRate = effectOpenRate, effectPushReadRate
	p.logger("effectiveness", "events", st.Events, "opens published", st.Opens,
		"pushed", stage.Pushed, "opened", stage.Opened, "converted", stage.Converted,
		"open rate", res.EffectOpenRate, "conversion rate", res.EffectConversionRate)
	return nil
}
