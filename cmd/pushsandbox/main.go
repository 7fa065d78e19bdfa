// Command pushsandbox runs the local push provider of package push/sandbox: FCM HTTP v1 (with
// its OAuth2 token endpoint and the control API) and APNs over HTTP/2, for the demo and for
// manual testing. It writes the credentials clients need to -creds-dir.
//
//	pushsandbox -creds-dir ./.sandbox -chaos-5xx 0.05 -chaos-429 0.05 -chaos-seed 1
//
// Every flag has an environment variable of the command's own scope
// (-creds-dir: NUDGE_PUSHSANDBOX_CREDS_DIR), so that it never reads a
// service's settings (ingest's NUDGE_MAX_DELIVERIES means something else).
package main

import (
	"context"
	"io"
	"log/slog"
	"strings"

	"github.com/nudgehq/nudge/internal/cli"
	"github.com/nudgehq/nudge/internal/flagenv"
	"github.com/nudgehq/nudge/push/sandbox"
)

func main() {
	cli.Run("pushsandbox", run)
}

// run starts the sandbox and serves until ctx is done. Logs go to stdout as JSON.
func run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := flagenv.NewFlagSet("pushsandbox", "pushsandbox: a local FCM and APNs for the demo and tests", envName)
	fs.SetOutput(stdout)
	var (
		fcmAddr    = fs.String("fcm-addr", "127.0.0.1:8085", "listen address of FCM, OAuth2 token and control endpoints")
		apnsAddr   = fs.String("apns-addr", "127.0.0.1:8086", "listen address of the APNs HTTP/2 endpoint")
		credsDir   = fs.String("creds-dir", "", "directory to write service-account.json, apns-key.p8, apns-ca.pem and sandbox.env to; empty: do not write")
		project    = fs.String("project", "nudge-sandbox", "Firebase project id")
		topic      = fs.String("apns-topic", "com.nudgehq.app", "APNs topic (bundle id) accepted")
		teamID     = fs.String("apns-team-id", "", "APNs team id (default: random)")
		keyID      = fs.String("apns-key-id", "", "id of the APNs key of the first app (default: random; the key itself is generated at every start), so that a static apps file can name it")
		appNames   = fs.String("apps", "", "comma-separated apps to serve, each with its own Firebase project (<app>-sandbox), service account, APNs key, team and topic (com.nudgehq.<app>); the first app's credentials are the files -project and -apns-topic describe, and apps.yaml in -creds-dir names them all; empty: one app")
		seed       = fs.Uint64("chaos-seed", 1, "seed of the random failure mix")
		p5xx       = fs.Float64("chaos-5xx", 0, "probability of a 503 per request")
		p429       = fs.Float64("chaos-429", 0, "probability of a 429 per request")
		pUnreg     = fs.Float64("chaos-unregistered", 0, "probability that a token becomes unregistered (for good)")
		retryAfter = fs.Int("chaos-retry-after", 0, "Retry-After seconds sent with chaos 503 and 429 (0: none)")
		latency    = fs.Duration("latency", 0, "delay added to every send request")
		maxDeliv   = fs.Int("max-deliveries", 100_000, "deliveries kept in memory (oldest dropped)")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
	)
	if err := cli.Parse(fs, args, getenv, false); err != nil {
		return err
	}
	logging := cli.Logging{Level: *logLevel}
	if err := logging.Check(); err != nil {
		return err
	}
	logger := logging.Logger(stdout)

	var apps []sandbox.AppConfig
	names := *appNames
	if strings.TrimSpace(names) == "" {
		names = sandbox.DefaultAppName
	}
	for i, name := range strings.Split(names, ",") {
		name = strings.TrimSpace(name)
		if name == "" {
			continue
		}
		a := sandbox.AppConfig{Name: name}
		if i == 0 { // the first app is the one of -project and -apns-topic
			a.ProjectID, a.APNsTopics, a.APNsTeamID, a.APNsKeyID = *project, []string{*topic}, *teamID, *keyID
		}
		apps = append(apps, a)
	}
	sb, err := sandbox.Start(ctx, sandbox.Config{
		Apps:       apps,
		FCMAddr:    *fcmAddr,
		APNsAddr:   *apnsAddr,
		ProjectID:  *project,
		APNsTopic:  *topic,
		APNsTeamID: *teamID,
		Chaos: sandbox.Chaos{
			Seed:              *seed,
			ServerError:       *p5xx,
			RateLimited:       *p429,
			Unregistered:      *pUnreg,
			RetryAfterSeconds: *retryAfter,
		},
		Latency:       *latency,
		MaxDeliveries: *maxDeliv,
		Logger:        logger,
	})
	if err != nil {
		return err
	}
	defer sb.Close()

	if *credsDir != "" {
		if err := sb.WriteCredentials(*credsDir); err != nil {
			return err
		}
		logger.Info("credentials written", slog.String("dir", *credsDir), slog.String("env_file", sandbox.EnvFile),
			slog.String("apps_file", sandbox.AppsFile), slog.Any("apps", sb.Apps()))
	}

	<-ctx.Done()
	logger.Info("shutting down")
	// A sandbox holds nothing worth draining: Close drops open connections at once.
	return sb.Close()
}

// scope names the command's environment variables (flagenv.ScopedName).
const scope = "pushsandbox"

var envName = flagenv.ScopedName(scope)
