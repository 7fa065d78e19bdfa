package apps

import (
	"context"
	"flag"
	"fmt"
)

// Flags are the single-app settings: one app's FCM and APNs credentials
// given as flags (-fcm-*, -apns-*) instead of in an apps file. Without a
// file its app pushes every app's reminders; with one, the default app's
// if the file does not list it.
type Flags struct {
	FCM   FCMConfig
	APNs  APNsConfig
	Topic string
}

// RegisterFlags registers the settings on fs.
func (s *Flags) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&s.FCM.CredentialsFile, "fcm-credentials-file", "", "FCM service-account JSON file (empty: no FCM)")
	fs.StringVar(&s.FCM.ProjectID, "fcm-project-id", "", "Firebase project id (default: the service account's)")
	fs.StringVar(&s.FCM.Endpoint, "fcm-endpoint", "", "FCM HTTP v1 base URL (default Google's; the push sandbox gives its own)")
	fs.StringVar(&s.APNs.KeyFile, "apns-key-file", "", "APNs .p8 signing key file (empty: no APNs)")
	fs.StringVar(&s.APNs.KeyID, "apns-key-id", "", "APNs key id")
	fs.StringVar(&s.APNs.TeamID, "apns-team-id", "", "Apple team id")
	fs.StringVar(&s.Topic, "apns-topic", "", "app bundle id")
	fs.StringVar(&s.APNs.Host, "apns-host", HostProduction, "APNs host (https://api.sandbox.push.apple.com for development builds)")
	fs.StringVar(&s.APNs.CAFile, "apns-ca-file", "", "PEM CA to trust for APNs instead of the system roots (the push sandbox's)")
}

// Build makes the app named name from the settings, with the senders
// they name (an FCM credentials file, an APNs key file); nil when they
// name neither. Unlike an app of the file, it pushes a device the topic
// the device names, whatever it is, and -apns-topic to one that names
// none.
func (s *Flags) Build(ctx context.Context, name string, o Options) (*App, error) {
	var c Config
	if s.FCM.CredentialsFile != "" {
		c.FCM = &s.FCM
	}
	if s.APNs.KeyFile != "" {
		ac := s.APNs
		ac.Topics = []string{s.Topic}
		c.APNs = &ac
	}
	if c.FCM == nil && c.APNs == nil {
		return nil, nil
	}
	a, err := buildApp(ctx, name, c, o)
	if err != nil {
		return nil, fmt.Errorf("single-app settings (-fcm-*, -apns-*): %w", err)
	}
	a.Topics = nil
	return a, nil
}
