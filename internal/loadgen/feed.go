package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// feedPoll is how often the push feed is read.
const feedPoll = 500 * time.Millisecond

// followPushes reads the push sandbox's deliveries (PushFeed), oldest
// first from where it left off, and hands each reminder push to the
// generator until ctx ends. A failed read is tried again at the next poll.
func (r *Runner) followPushes(ctx context.Context) {
	client := &http.Client{Timeout: 5 * time.Second}
	since := time.Now().Add(-time.Second)
	tick := time.NewTicker(feedPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for ctx.Err() == nil {
			ds, err := readDeliveries(ctx, client, r.cfg.PushFeed, since)
			if err != nil || len(ds) == 0 {
				break
			}
			for _, d := range ds {
				since = d.Time
				stage, _ := strconv.Atoi(d.Data["stage"])
				if d.Data["episode"] == "" || stage < 1 {
					continue
				}
				r.gen.React(Push{Token: d.Token, Platform: d.Platform, Episode: d.Data["episode"], Stage: stage, Conversation: d.Data["conversation_id"]})
			}
			if len(ds) < feedPage {
				break
			}
		}
	}
}

// feedPage is the most deliveries one read takes.
const feedPage = 1000

type feedDelivery struct {
	Token    string            `json:"token"`
	Platform string            `json:"platform"`
	Data     map[string]string `json:"data"`
	Time     time.Time         `json:"time"`
}

func readDeliveries(ctx context.Context, client *http.Client, feed string, since time.Time) ([]feedDelivery, error) {
	q := url.Values{"order": {"oldest"}, "limit": {strconv.Itoa(feedPage)}, "since": {since.Format(time.RFC3339Nano)}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, feed+"/deliveries?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("push feed: %s", resp.Status)
	}
	var body struct {
		Deliveries []feedDelivery `json:"deliveries"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, fmt.Errorf("push feed: %w", err)
	}
	return body.Deliveries, nil
}
