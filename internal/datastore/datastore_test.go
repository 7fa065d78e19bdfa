package datastore_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/nudgehq/nudge/internal/datastore"
	"github.com/nudgehq/nudge/internal/pgtest"
)

func caFile(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRedisOptions(t *testing.T) {
	t.Parallel()
	ca := caFile(t)
	t.Run("single", func(t *testing.T) {
		o, err := datastore.Redis{URL: "rediss://app:secret@redis.example:6380/2", CAFile: ca}.Options()
		if err != nil {
			t.Fatal(err)
		}
		if o.Cluster != nil || o.Single.Addr != "redis.example:6380" || o.Single.Username != "app" || o.Single.Password != "secret" ||
			o.Single.DB != 2 || o.Single.TLSConfig == nil || o.Single.TLSConfig.RootCAs == nil {
			t.Fatalf("options %+v", o.Single)
		}
		a, ok := o.Asynq().(asynq.RedisClientOpt)
		if !ok || a.Addr != "redis.example:6380" || a.Password != "secret" || a.DB != 2 || a.TLSConfig == nil {
			t.Fatalf("asynq options %+v", o.Asynq())
		}
		if strings.Contains(o.Describe(), "secret") {
			t.Errorf("Describe shows the password: %s", o.Describe())
		}
	})
	t.Run("cluster", func(t *testing.T) {
		o, err := datastore.Redis{URL: "rediss://app:secret@ignored:6379", Cluster: "10.0.0.1:7000, 10.0.0.2:7000", CAFile: ca}.Options()
		if err != nil {
			t.Fatal(err)
		}
		c := o.Cluster
		if c == nil || len(c.Addrs) != 2 || c.Addrs[1] != "10.0.0.2:7000" || c.Username != "app" || c.Password != "secret" ||
			c.TLSConfig == nil || c.TLSConfig.RootCAs == nil || c.TLSConfig.ServerName != "" {
			t.Fatalf("cluster options %+v", c)
		}
		a, ok := o.Asynq().(asynq.RedisClusterClientOpt)
		if !ok || len(a.Addrs) != 2 || a.Password != "secret" || a.TLSConfig == nil {
			t.Fatalf("asynq options %+v", o.Asynq())
		}
		cl := o.Client()
		defer cl.Close()
	})
	for _, tt := range []struct {
		name string
		r    datastore.Redis
		want string
	}{
		{"bad scheme", datastore.Redis{URL: "http://x"}, "-redis-url"},
		{"empty", datastore.Redis{}, "-redis-url is empty"},
		{"ca without tls", datastore.Redis{URL: "redis://x:6379", CAFile: ca}, "rediss://"},
		{"missing ca", datastore.Redis{URL: "rediss://x:6379", CAFile: "/nonexistent.pem"}, "-redis-ca-file"},
		{"not a pem", datastore.Redis{URL: "rediss://x:6379", CAFile: "datastore.go"}, "no PEM certificate"},
		{"cluster without port", datastore.Redis{URL: datastore.DefaultRedisURL, Cluster: "a:1,b"}, `-redis-cluster: "b"`},
		{"cluster with a database", datastore.Redis{URL: "redis://x/3", Cluster: "a:1"}, "database 3"},
	} {
		_, err := tt.r.Options()
		if !errors.Is(err, datastore.ErrSettings) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want ErrSettings naming %q", tt.name, err, tt.want)
		}
	}
}

func TestPostgres(t *testing.T) {
	t.Parallel()
	c, err := datastore.Postgres{URL: "postgres://u:pw@db.example:5433/nudge?sslmode=verify-full&sslrootcert=/ca.pem"}.Config()
	if err == nil {
		t.Fatalf("a missing sslrootcert file must fail at start, got %+v", c.ConnConfig.Host)
	}
	if !strings.Contains(err.Error(), "-database-url") || strings.Contains(err.Error(), "pw@") {
		t.Errorf("error %v: want it to name -database-url and hide the password", err)
	}
	c, err = datastore.Postgres{URL: "postgres://u:pw@db.example:5433/nudge?sslmode=disable"}.Config()
	if err != nil || c.ConnConfig.Port != 5433 || c.ConnConfig.TLSConfig != nil {
		t.Fatalf("config %v %v", c, err)
	}
	if _, err := (datastore.Postgres{}).Config(); !errors.Is(err, datastore.ErrSettings) || !strings.Contains(err.Error(), "NUDGE_DATABASE_URL") {
		t.Errorf("empty URL: %v", err)
	}
}

func TestRegister(t *testing.T) {
	t.Parallel()
	var r datastore.Redis
	var p datastore.Postgres
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	r.Register(fs, datastore.DefaultRedisURL)
	p.Register(fs, "", "registry")
	if err := fs.Parse([]string{"-redis-cluster", "a:1", "-database-url", "postgres://x"}); err != nil {
		t.Fatal(err)
	}
	if r.URL != datastore.DefaultRedisURL || r.Cluster != "a:1" || p.URL != "postgres://x" {
		t.Fatalf("%+v %+v", r, p)
	}
}

// The tools' databases: created, found existing, dropped.
func TestDatabases(t *testing.T) {
	t.Parallel()
	admin := pgtest.Admin(t)
	ctx := context.Background()
	name := "nudge_test_ds_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	exists := func() bool {
		var ok bool
		if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		return ok
	}
	dbURL, err := datastore.CreateDatabase(ctx, pgtest.AdminURL(), name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = datastore.DropDatabase(context.Background(), pgtest.AdminURL(), name) })
	if !exists() || !strings.Contains(dbURL, "/"+name) {
		t.Fatalf("created %s: exists %v", dbURL, exists())
	}
	if _, err := datastore.CreateDatabase(ctx, pgtest.AdminURL(), name); err == nil {
		t.Error("creating an existing database: no error")
	}
	if err := datastore.EnsureDatabase(ctx, dbURL); err != nil {
		t.Errorf("ensure an existing database: %v", err)
	}
	if err := datastore.DropDatabase(ctx, pgtest.AdminURL(), name); err != nil || exists() {
		t.Fatalf("drop: %v, exists %v", err, exists())
	}
	if err := datastore.EnsureDatabase(ctx, dbURL); err != nil || !exists() {
		t.Errorf("ensure a missing database: %v, exists %v", err, exists())
	}
}
