package validate

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The strict decoder is what catches a misspelt field, which kubectl would
// otherwise drop (or warn about) silently.
func TestStrictDecoderRejectsUnknownFields(t *testing.T) {
	t.Parallel()
	for name, doc := range map[string]string{
		"misspelt field": `
apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: x
          image: x:1
          livenesProbe: {httpGet: {path: /healthz, port: 9090}}
`,
		"duplicate field": `
apiVersion: v1
kind: ConfigMap
metadata: {name: x}
data: {a: "1"}
data: {b: "2"}
`,
		"wrong type": `
apiVersion: v1
kind: Service
metadata: {name: x}
spec: {ports: [{port: "eighty"}]}
`,
		"unknown kind": `
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: x}
`,
	} {
		if _, err := decodeStrict([]byte(doc)); err == nil {
			t.Errorf("%s: decoded without error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

// Each rule fails on the violation it exists for: the dev overlay, broken
// one way at a time.
func TestRulesCatchViolations(t *testing.T) {
	t.Parallel()
	mainContainer := func(b *bundle, component string) *corev1.Container {
		return &b.deployment(component).Spec.Template.Spec.Containers[0]
	}
	cases := []struct {
		name   string
		rule   func(*bundle) []string
		break_ func(*bundle)
		want   string
	}{
		{"object in another namespace", ruleNamespace, func(b *bundle) { b.Services[0].Namespace = "default" }, `in namespace "default"`},
		{"no liveness probe", ruleProbes, func(b *bundle) { mainContainer(b, "ingest").LivenessProbe = nil }, "no liveness probe"},
		{"sidecar without readiness", ruleProbes, func(b *bundle) {
			b.deployment("worker").Spec.Template.Spec.InitContainers[0].ReadinessProbe = nil
		}, "sidecar"},
		{"liveness on the wrong path", ruleNudgeContainers, func(b *bundle) {
			mainContainer(b, "flusher").LivenessProbe.HTTPGet.Path = "/readyz"
		}, "liveness probe must be GET /healthz"},
		{"latest image", ruleImagesPinned, func(b *bundle) { mainContainer(b, "worker").Image = "ghcr.io/nudgehq/nudge:latest" }, ":latest"},
		{"untagged image", ruleImagesPinned, func(b *bundle) { b.StatefulSets[0].Spec.Template.Spec.Containers[0].Image = "redis" }, "no tag"},
		{"branch tag", ruleImagesPinned, func(b *bundle) { mainContainer(b, "report").Image = "ghcr.io/nudgehq/nudge:main" }, "release tag"},
		{"no memory limit", ruleResources, func(b *bundle) {
			delete(mainContainer(b, "ingest").Resources.Limits, corev1.ResourceMemory)
		}, "no memory limit"},
		{"writable root", ruleSecurityContext, func(b *bundle) {
			f := false
			mainContainer(b, "report").SecurityContext.ReadOnlyRootFilesystem = &f
		}, "readOnlyRootFilesystem"},
		{"root user", ruleSecurityContext, func(b *bundle) {
			var root int64
			b.StatefulSets[0].Spec.Template.Spec.Containers[0].SecurityContext.RunAsUser = &root
		}, "runAsUser"},
		{"capability added", ruleSecurityContext, func(b *bundle) {
			mainContainer(b, "worker").SecurityContext.Capabilities.Add = []corev1.Capability{"NET_ADMIN"}
		}, "adds capabilities"},
		{"short worker grace", ruleGracePeriods, func(b *bundle) {
			g := int64(30)
			b.deployment("worker").Spec.Template.Spec.TerminationGracePeriodSeconds = &g
		}, "below 60"},
		{"consumer from host name", ruleIngestConsumer, func(b *bundle) {
			c := mainContainer(b, "ingest")
			c.Env = c.Env[1:]
		}, "NUDGE_CONSUMER"},
		{"more ingest replicas than shards", ruleReplicas, func(b *bundle) {
			n := int32(9)
			b.deployment("ingest").Spec.Replicas = &n
		}, "sit idle"},
		{"deployment without PDB", rulePDBs, func(b *bundle) { b.PDBs = b.PDBs[1:] }, "no PodDisruptionBudget"},
		{"no worker HPA", ruleWorkerHPA, func(b *bundle) { b.HPAs = nil }, "no HorizontalPodAutoscaler"},
		{"worker replicas fight the HPA", ruleWorkerHPA, func(b *bundle) {
			n := int32(2)
			b.deployment("worker").Spec.Replicas = &n
		}, "owns it"},
		{"no default deny", ruleNetworkPolicies, func(b *bundle) {
			for i, p := range b.Policies {
				if p.Name == "nudge-default-deny" {
					b.Policies = append(b.Policies[:i], b.Policies[i+1:]...)
					return
				}
			}
		}, "no default-deny"},
		{"ingress open to all", ruleNetworkPolicies, func(b *bundle) {
			for _, p := range b.Policies {
				if p.Name == "nudge-report-from-ingress" {
					p.Spec.Ingress[0].From = nil
				}
			}
		}, "admits every source"},
		{"no DNS", ruleNetworkPolicies, func(b *bundle) {
			for _, p := range b.Policies {
				if p.Name == "nudge-egress-dns" {
					p.Spec.PodSelector = metav1.LabelSelector{MatchLabels: map[string]string{"x": "y"}}
				}
			}
		}, "no DNS egress"},
		{"password in a ConfigMap", ruleNoSecretsInConfig, func(b *bundle) {
			b.ConfigMaps[0].Data["NUDGE_REDIS_PASSWORD"] = "hunter2hunter2"
		}, "a secret's name"},
		{"URL with credentials in a ConfigMap", ruleNoSecretsInConfig, func(b *bundle) {
			b.ConfigMaps[0].Data["NUDGE_DATABASE_URL"] = "postgres://nudge:s3cret@db:5432/nudge"
		}, "credential-like"},
		{"private key in a ConfigMap", ruleNoSecretsInConfig, func(b *bundle) {
			b.ConfigMaps[0].Data["key.p8"] = "-----BEGIN PRIVATE KEY-----\nMIG...\n-----END PRIVATE KEY-----\n"
		}, "credential-like"},
		{"requirepass in redis.conf", ruleNoSecretsInConfig, func(b *bundle) {
			for _, cm := range b.ConfigMaps {
				if c, ok := cm.Data["redis.conf"]; ok {
					cm.Data["redis.conf"] = c + "requirepass hunter2\n"
				}
			}
		}, "credential-like"},
		{"token as a literal env var", ruleNoSecretsInConfig, func(b *bundle) {
			c := mainContainer(b, "report")
			c.Env = append(c.Env, corev1.EnvVar{Name: "NUDGE_TOKEN", Value: "0123456789abcdef"})
		}, "use a secretKeyRef"},
		{"dangling secret", ruleReferences, func(b *bundle) {
			mainContainer(b, "flusher").Env[1].ValueFrom.SecretKeyRef.Name = "nudge-redis"
		}, "not generated by the dev overlay"},
		{"dangling ConfigMap", ruleReferences, func(b *bundle) {
			mainContainer(b, "flusher").EnvFrom[0].ConfigMapRef.Name = "nudge-config"
		}, "does not exist"},
		{"service selects nothing", ruleServices, func(b *bundle) {
			b.Services[0].Spec.Selector = map[string]string{"app.kubernetes.io/name": "nobody"}
		}, "selects no pod"},
		{"no AOF", ruleDevRedisPersistence, func(b *bundle) {
			for _, cm := range b.ConfigMaps {
				if c, ok := cm.Data["redis.conf"]; ok {
					cm.Data["redis.conf"] = strings.Replace(c, "appendonly yes", "appendonly no", 1)
				}
			}
		}, "appendonly yes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := load(t, "k8s/overlays/dev", "nudge-dev")
			if ps := tc.rule(b); len(ps) > 0 {
				t.Fatalf("the rule fails on the intact dev overlay: %v", ps)
			}
			tc.break_(b)
			ps := tc.rule(b)
			if !strings.Contains(strings.Join(ps, "\n"), tc.want) {
				t.Errorf("broken manifests pass: got %q, want a problem containing %q", ps, tc.want)
			}
		})
	}
}

// A production render with a Secret in it fails.
func TestProductionRejectsSecrets(t *testing.T) {
	t.Parallel()
	b := load(t, "k8s/overlays/production", "nudge")
	b.Secrets = append(b.Secrets, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "nudge-redis", Namespace: "nudge"}})
	if ps := ruleSecretsPerOverlay(b); len(ps) == 0 {
		t.Error("a Secret in the production render passes")
	}
}
