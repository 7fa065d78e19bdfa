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
		cfg                    sandbox.Config
		credsDir, keyID, names string
		logging                cli.Logging
	)
	fs.StringVar(&cfg.FCMAddr, "fcm-addr", "127.0.0.1:8085", "listen address of FCM, OAuth2 token and control endpoints")
	fs.StringVar(&cfg.APNsAddr, "apns-addr", "127.0.0.1:8086", "listen address of the APNs HTTP/2 endpoint")
	fs.StringVar(&credsDir, "creds-dir", "", "directory to write service-account.json, apns-key.p8, apns-ca.pem and sandbox.env to; empty: do not write")
	fs.StringVar(&cfg.ProjectID, "project", "nudge-sandbox", "Firebase project id")
	fs.StringVar(&cfg.APNsTopic, "apns-topic", "com.nudgehq.app", "APNs topic (bundle id) accepted")
	fs.StringVar(&cfg.APNsTeamID, "apns-team-id", "", "APNs team id (default: random)")
	fs.StringVar(&keyID, "apns-key-id", "", "id of the APNs key of the first app (default: random; the key itself is generated at every start), so that a static apps file can name it")
	fs.StringVar(&names, "apps", "", "comma-separated apps to serve, each with its own Firebase project (<app>-sandbox), service account, APNs key, team and topic (com.nudgehq.<app>); the first app's credentials are the files -project and -apns-topic describe, and apps.yaml in -creds-dir names them all; empty: one app")
	cfg.Chaos.RegisterFlags(fs.FlagSet)
	fs.DurationVar(&cfg.Latency, "latency", 0, "delay added to every send request")
	fs.IntVar(&cfg.MaxDeliveries, "max-deliveries", 100_000, "deliveries kept in memory (oldest dropped)")
	fs.StringVar(&logging.Level, "log-level", "info", "debug, info, warn or error")
	if err := cli.Parse(fs, args, getenv, false); err != nil {
		return err
	}
	if err := logging.Check(); err != nil {
		return err
	}
	cfg.Logger = logging.Logger(stdout)

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
			a.ProjectID, a.APNsTopics, a.APNsTeamID, a.APNsKeyID = cfg.ProjectID, []string{cfg.APNsTopic}, cfg.APNsTeamID, keyID
		}
		cfg.Apps = append(cfg.Apps, a)
	}
	sb, err := sandbox.Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer sb.Close()

	if credsDir != "" {
		if err := sb.WriteCredentials(credsDir); err != nil {
			return err
		}
		cfg.Logger.Info("credentials written", slog.String("dir", credsDir), slog.String("env_file", sandbox.EnvFile),
			slog.String("apps_file", sandbox.AppsFile), slog.Any("apps", sb.Apps()))
	}

	<-ctx.Done()
	cfg.Logger.Info("shutting down")
	// A sandbox holds nothing worth draining: Close drops open connections at once.
	return sb.Close()
}

// scope names the command's environment variables (flagenv.ScopedName).
const scope = "pushsandbox"

var envName = flagenv.ScopedName(scope)
