package main

// report sessions: sign-in links, and signing every browser out.

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/keys"
	"github.com/nudgehq/nudge/report"
)

// sessionsFlags returns the flag set of a `sessions` command: where the
// sessions are (the Redis and key prefix of report serve).
func sessionsFlags(name, summary string, r *datastore.Redis, prefix *string) *flagenv.FlagSet {
	fs := flagenv.NewFlagSet("report sessions "+name, "report sessions "+name+": "+summary, connEnv)
	r.Register(fs.FlagSet, datastore.DefaultRedisURL)
	fs.StringVar(prefix, "prefix", keys.DefaultPrefix, "prefix of Nudge's Redis keys (as report serve's)")
	return fs
}

func revokeAllFlags(r *datastore.Redis, prefix *string) *flagenv.FlagSet {
	return sessionsFlags("revoke-all", "sign out every browser session of the report servers on this Redis", r, prefix)
}

// linkOptions are the flags of `sessions sign-in-link`.
type linkOptions struct {
	role, url, next string
	ttl             time.Duration
}

func signInLinkFlags(r *datastore.Redis, prefix *string, o *linkOptions) *flagenv.FlagSet {
	fs := sessionsFlags("sign-in-link", "print a link that signs one browser in to the report servers on this Redis, once", r, prefix)
	fs.StringVar(&o.role, "role", "reader", "what the browser may do: reader, or admin (the server needs a token of that role: -token, -admin-token)")
	fs.DurationVar(&o.ttl, "ttl", 15*time.Minute, "how long the link can be used (once), at most 24h")
	fs.StringVar(&o.url, "url", "http://127.0.0.1:8090", "the report server's address, as the browser reaches it")
	fs.StringVar(&o.next, "next", "/", "the page to open once signed in, e.g. /?range=1h&live=1")
	return fs
}

// sessions runs `report sessions revoke-all` (every session cookie signed
// so far, by any server sharing the Redis, is refused from now on: the
// epoch of keys.SessionsEpoch moves on; bearer tokens and basic auth are
// not sessions: change them to lock their holders out) and `report
// sessions sign-in-link` (a link that signs one browser in, once).
func sessions(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	if len(args) == 0 || (args[0] != "revoke-all" && args[0] != "sign-in-link") {
		fmt.Fprint(stdout, usage)
		return fmt.Errorf("%w: report sessions takes a command: revoke-all or sign-in-link", cli.ErrUsage)
	}
	var (
		r      datastore.Redis
		prefix string
		lo     linkOptions
		fs     *flagenv.FlagSet
	)
	if args[0] == "revoke-all" {
		fs = revokeAllFlags(&r, &prefix)
	} else {
		fs = signInLinkFlags(&r, &prefix, &lo)
	}
	fs.SetOutput(stdout)
	if err := cli.Parse(fs, args[1:], getenv, false); err != nil {
		return err
	}
	if !r.Enabled() {
		return fmt.Errorf("%w: sessions live in Redis: set -redis-url (NUDGE_REDIS_URL) to report serve's", cli.ErrUsage)
	}
	o, err := r.Options()
	if err != nil {
		return fmt.Errorf("%w: %w", cli.ErrUsage, err)
	}
	rdb := o.Client()
	defer rdb.Close()
	ks := keys.New(prefix, 0)
	if args[0] == "revoke-all" {
		if err := report.RevokeAllSessions(ctx, rdb, ks); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "revoked every browser session: sign in again")
		return nil
	}
	rl, err := report.ParseRole(lo.role)
	if err != nil {
		return fmt.Errorf("%w: -role: %w", cli.ErrUsage, err)
	}
	link, err := signInURL(lo.url, lo.next)
	if err != nil {
		return fmt.Errorf("%w: %w", cli.ErrUsage, err)
	}
	code, err := report.NewSignInLink(ctx, rdb, ks, rl, lo.ttl)
	if err != nil {
		return err
	}
	q := link.Query()
	q.Set("code", code)
	link.RawQuery = q.Encode()
	fmt.Fprintln(stdout, link.String())
	return nil
}

// signInURL returns the sign-in page of the server at base, going on to
// next (a path of that server).
func signInURL(base, next string) (*url.URL, error) {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("-url %q: want http(s)://host[:port], without credentials", base)
	}
	if !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") {
		return nil, fmt.Errorf("-next %q: want a path of the server, starting with /", next)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/login"
	u.RawQuery = url.Values{"next": {next}}.Encode()
	return u, nil
}
