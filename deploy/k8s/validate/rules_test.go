package validate

import (
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/yaml"
)

// Settings the rules hold the manifests to.
const (
	nudgeImage     = "ghcr.io/nudgehq/nudge"
	nonRootUID     = 65532
	metricsPort    = 9090
	reportPort     = 8090
	devOnlyLabel   = "nudgehq.io/dev-only"
	componentLabel = "app.kubernetes.io/component"
	nameLabel      = "app.kubernetes.io/name"
)

// secretContract is what an operator must create for production: Secret
// name -> required keys. deploy/README.md documents the same table (a test
// checks it does), and the production overlay must reference exactly these.
var secretContract = map[string][]string{
	"nudge-redis":    {"flusher-url", "ingest-url", "report-url", "worker-url"},
	"nudge-postgres": {"app-url", "flusher-url", "migrate-url", "report-url"},
	"nudge-report":   {"token"},
	"nudge-apps":     {"apps.yaml"},
}

// wholeSecrets are mounted whole (a volume without items): besides their
// documented keys they hold files the operator names (the apps file names
// its credential files), and an update of the Secret must reach the pod.
var wholeSecrets = map[string]bool{"nudge-apps": true}

// optionalSecretKeys may be referenced with optional: true.
var optionalSecretKeys = map[string][]string{
	"nudge-report": {"basic-auth"},
}

// minGracePeriod is the least terminationGracePeriodSeconds per component:
// the worker gives running tasks asynq's ShutdownTimeout (25 s) plus
// margin, ingest finishes and acknowledges its batch and releases leases.
var minGracePeriod = map[string]int64{"worker": 60, "ingest": 30, "flusher": 30, "report": 30}

type rule struct {
	name  string
	check func(*bundle) []string
	only  string // run on this bundle only ("" for all)
}

var rules = []rule{
	{"namespace", ruleNamespace, ""},
	{"images pinned", ruleImagesPinned, ""},
	{"resources", ruleResources, ""},
	{"security context", ruleSecurityContext, ""},
	{"probes", ruleProbes, ""},
	{"nudge containers: health and metrics on 9090", ruleNudgeContainers, ""},
	{"grace periods", ruleGracePeriods, ""},
	{"ingest consumer name", ruleIngestConsumer, ""},
	{"replicas", ruleReplicas, ""},
	{"pod disruption budgets", rulePDBs, ""},
	{"worker autoscaler", ruleWorkerHPA, ""},
	{"network policies", ruleNetworkPolicies, ""},
	{"no secrets in ConfigMaps or env", ruleNoSecretsInConfig, ""},
	{"references resolve", ruleReferences, ""},
	{"services select pods", ruleServices, ""},
	{"migration job", ruleMigrationJob, ""},
	{"secrets: dev placeholders only in dev", ruleSecretsPerOverlay, ""},
	{"dev redis persistence", ruleDevRedisPersistence, "overlays/dev"},
}

func TestManifests(t *testing.T) {
	for _, k := range kustomizations {
		t.Run(k.dir, func(t *testing.T) {
			t.Parallel()
			b := load(t, k.dir, k.namespace)
			t.Logf("%s: %d Deployments, %d StatefulSets, %d Jobs, %d Services, %d ConfigMaps, %d Secrets, %d PDBs, %d HPAs, %d NetworkPolicies",
				b.name, len(b.Deployments), len(b.StatefulSets), len(b.Jobs), len(b.Services), len(b.ConfigMaps), len(b.Secrets),
				len(b.PDBs), len(b.HPAs), len(b.Policies))
			for _, r := range rules {
				if r.only != "" && r.only != b.name {
					continue
				}
				t.Run(r.name, func(t *testing.T) {
					for _, p := range r.check(b) {
						t.Error(p)
					}
				})
			}
		})
	}
}

// The production overlay's kustomization must not generate Secrets: they
// are created out of band (a Secret object in the render fails
// ruleSecretsPerOverlay; this catches a generator before it is rendered).
func TestProductionGeneratesNoSecrets(t *testing.T) {
	raw := readFile(t, filepath.Join(deployDir(t), "k8s/overlays/production/kustomization.yaml"))
	var k types.Kustomization
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		t.Fatalf("production kustomization.yaml: %v", err)
	}
	if len(k.SecretGenerator) > 0 {
		t.Errorf("production kustomization.yaml has a secretGenerator (%d entries): production Secrets are created out of band", len(k.SecretGenerator))
	}
	for _, r := range k.Resources {
		if strings.Contains(r, "dev") {
			t.Errorf("production kustomization.yaml includes %q", r)
		}
	}
}

// ---- rules ----

func ruleNamespace(b *bundle) []string {
	var ps []string
	if b.namespace == "" {
		return nil
	}
	found := false
	for _, ns := range b.Namespaces {
		if ns.Name != b.namespace {
			ps = append(ps, fmt.Sprintf("Namespace %q: the overlay deploys to %q", ns.Name, b.namespace))
			continue
		}
		found = true
		if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
			ps = append(ps, fmt.Sprintf("Namespace %q does not enforce the restricted Pod Security Standard", ns.Name))
		}
	}
	if !found {
		ps = append(ps, fmt.Sprintf("no Namespace %q", b.namespace))
	}
	for _, o := range b.objects {
		kind := reflect.TypeOf(o).Elem().Name()
		m := o.(metav1.Object)
		if kind != "Namespace" && m.GetNamespace() != b.namespace {
			ps = append(ps, fmt.Sprintf("%s/%s is in namespace %q, not %q", kind, m.GetName(), m.GetNamespace(), b.namespace))
		}
	}
	return ps
}

var releaseTag = regexp.MustCompile(`^v?\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$`)

// splitImage splits an image reference into repository, tag and digest.
func splitImage(ref string) (repo, tag, digest string) {
	repo = ref
	if i := strings.Index(repo, "@"); i >= 0 {
		repo, digest = repo[:i], repo[i+1:]
	}
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo, tag = repo[:i], repo[i+1:]
	}
	return repo, tag, digest
}

func ruleImagesPinned(b *bundle) []string {
	var ps []string
	for _, c := range b.containers() {
		repo, tag, digest := splitImage(c.c.Image)
		switch {
		case c.c.Image == "":
			ps = append(ps, fmt.Sprintf("%s: no image", c))
		case tag == "" && digest == "":
			ps = append(ps, fmt.Sprintf("%s: image %q has no tag (that is :latest)", c, c.c.Image))
		case tag == "latest":
			ps = append(ps, fmt.Sprintf("%s: image %q is :latest", c, c.c.Image))
		case repo == nudgeImage && digest == "" && !releaseTag.MatchString(tag):
			ps = append(ps, fmt.Sprintf("%s: image %q: Nudge's image must be a release tag (x.y.z) or a digest", c, c.c.Image))
		}
		if digest != "" && !strings.HasPrefix(digest, "sha256:") {
			ps = append(ps, fmt.Sprintf("%s: image %q: bad digest", c, c.c.Image))
		}
		if c.c.ImagePullPolicy == corev1.PullAlways {
			ps = append(ps, fmt.Sprintf("%s: imagePullPolicy Always suggests a moving tag", c))
		}
	}
	return ps
}

func ruleResources(b *bundle) []string {
	var ps []string
	for _, c := range b.containers() {
		r := c.c.Resources
		for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			req, hasReq := r.Requests[name]
			lim, hasLim := r.Limits[name]
			if !hasReq || req.IsZero() {
				ps = append(ps, fmt.Sprintf("%s: no %s request", c, name))
			}
			if !hasLim || lim.IsZero() {
				ps = append(ps, fmt.Sprintf("%s: no %s limit", c, name))
			}
			if hasReq && hasLim && req.Cmp(lim) > 0 {
				ps = append(ps, fmt.Sprintf("%s: %s request %s above its limit %s", c, name, req.String(), lim.String()))
			}
		}
	}
	return ps
}

func ruleSecurityContext(b *bundle) []string {
	var ps []string
	for _, w := range b.workloads() {
		if w.spec.AutomountServiceAccountToken == nil || *w.spec.AutomountServiceAccountToken {
			ps = append(ps, fmt.Sprintf("%s: automountServiceAccountToken must be false (nothing here calls the Kubernetes API)", w))
		}
		if w.spec.HostNetwork || w.spec.HostPID || w.spec.HostIPC {
			ps = append(ps, fmt.Sprintf("%s: uses a host namespace", w))
		}
		for _, v := range w.spec.Volumes {
			if v.HostPath != nil {
				ps = append(ps, fmt.Sprintf("%s: hostPath volume %q", w, v.Name))
			}
		}
	}
	for _, c := range b.containers() {
		pod := c.w.spec.SecurityContext
		if pod == nil {
			pod = &corev1.PodSecurityContext{}
		}
		sc := c.c.SecurityContext
		if sc == nil {
			ps = append(ps, fmt.Sprintf("%s: no securityContext", c))
			continue
		}
		nonRoot := sc.RunAsNonRoot
		if nonRoot == nil {
			nonRoot = pod.RunAsNonRoot
		}
		if nonRoot == nil || !*nonRoot {
			ps = append(ps, fmt.Sprintf("%s: runAsNonRoot is not true", c))
		}
		uid := sc.RunAsUser
		if uid == nil {
			uid = pod.RunAsUser
		}
		if uid == nil || *uid != nonRootUID {
			ps = append(ps, fmt.Sprintf("%s: runAsUser is not %d", c, nonRootUID))
		}
		if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
			ps = append(ps, fmt.Sprintf("%s: readOnlyRootFilesystem is not true", c))
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			ps = append(ps, fmt.Sprintf("%s: allowPrivilegeEscalation is not false", c))
		}
		if sc.Privileged != nil && *sc.Privileged {
			ps = append(ps, fmt.Sprintf("%s: privileged", c))
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			ps = append(ps, fmt.Sprintf("%s: capabilities do not drop ALL", c))
		} else if len(sc.Capabilities.Add) > 0 {
			ps = append(ps, fmt.Sprintf("%s: adds capabilities %v", c, sc.Capabilities.Add))
		}
		seccomp := sc.SeccompProfile
		if seccomp == nil {
			seccomp = pod.SeccompProfile
		}
		if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
			ps = append(ps, fmt.Sprintf("%s: seccompProfile is not RuntimeDefault", c))
		}
	}
	return ps
}

// ruleProbes: every container that runs for the pod's life (Deployments,
// StatefulSets, sidecars) has liveness and readiness probes. Jobs run to
// completion and have none; plain init containers neither.
func ruleProbes(b *bundle) []string {
	var ps []string
	for _, c := range b.containers() {
		if !c.w.longLived || (c.init && !c.sidecar) {
			continue
		}
		if c.c.LivenessProbe == nil {
			ps = append(ps, fmt.Sprintf("%s: no liveness probe", c))
		}
		if c.c.ReadinessProbe == nil {
			ps = append(ps, fmt.Sprintf("%s: no readiness probe", c))
		}
		for _, p := range []*corev1.Probe{c.c.LivenessProbe, c.c.ReadinessProbe, c.c.StartupProbe} {
			if p != nil && p.HTTPGet != nil && probePort(c.c, p.HTTPGet.Port) == 0 {
				ps = append(ps, fmt.Sprintf("%s: probe port %s is not a port of the container", c, p.HTTPGet.Port.String()))
			}
		}
	}
	return ps
}

// probePort resolves a probe's port (a number or a container port name).
func probePort(c *corev1.Container, port intstr.IntOrString) int32 {
	if port.Type == intstr.Int {
		return port.IntVal
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return p.ContainerPort
		}
	}
	return 0
}

// ruleNudgeContainers: the long-running Nudge commands serve /healthz and
// /readyz on the metrics port (NUDGE_METRICS_ADDR=:9090 from nudge-config).
func ruleNudgeContainers(b *bundle) []string {
	var ps []string
	config := map[string]*corev1.ConfigMap{}
	for _, cm := range b.ConfigMaps {
		config[cm.Name] = cm
	}
	for _, d := range b.Deployments {
		for i := range d.Spec.Template.Spec.Containers {
			c := &d.Spec.Template.Spec.Containers[i]
			repo, _, _ := splitImage(c.Image)
			if repo != nudgeImage {
				continue
			}
			where := fmt.Sprintf("Deployment/%s container %q", d.Name, c.Name)
			if len(c.Command) == 0 || !strings.HasPrefix(c.Command[0], "/usr/local/bin/") {
				ps = append(ps, fmt.Sprintf("%s: command must name its binary in /usr/local/bin (the image has no entrypoint)", where))
			}
			if p := probePort(c, intstr.FromString("metrics")); p != metricsPort {
				ps = append(ps, fmt.Sprintf("%s: no container port \"metrics\" %d", where, metricsPort))
			}
			for _, pr := range []struct {
				probe *corev1.Probe
				kind  string
				path  string
			}{{c.LivenessProbe, "liveness", "/healthz"}, {c.ReadinessProbe, "readiness", "/readyz"}} {
				if pr.probe == nil || pr.probe.HTTPGet == nil || pr.probe.HTTPGet.Path != pr.path || probePort(c, pr.probe.HTTPGet.Port) != metricsPort {
					ps = append(ps, fmt.Sprintf("%s: %s probe must be GET %s on port %d", where, pr.kind, pr.path, metricsPort))
				}
			}
			addr := ""
			for _, ef := range c.EnvFrom {
				if ef.ConfigMapRef != nil && config[ef.ConfigMapRef.Name] != nil {
					if v, ok := config[ef.ConfigMapRef.Name].Data["NUDGE_METRICS_ADDR"]; ok {
						addr = v
					}
				}
			}
			for _, e := range c.Env {
				if e.Name == "NUDGE_METRICS_ADDR" {
					addr = e.Value
				}
			}
			if addr != ":"+strconv.Itoa(metricsPort) {
				ps = append(ps, fmt.Sprintf("%s: NUDGE_METRICS_ADDR is %q, not \":%d\"", where, addr, metricsPort))
			}
			if d.Spec.Template.Annotations["prometheus.io/scrape"] != "true" || d.Spec.Template.Annotations["prometheus.io/port"] != strconv.Itoa(metricsPort) {
				ps = append(ps, fmt.Sprintf("Deployment/%s: pod template lacks the prometheus.io/scrape and /port annotations", d.Name))
			}
		}
	}
	return ps
}

func ruleGracePeriods(b *bundle) []string {
	var ps []string
	for _, d := range b.Deployments {
		g := d.Spec.Template.Spec.TerminationGracePeriodSeconds
		if g == nil {
			ps = append(ps, fmt.Sprintf("Deployment/%s: terminationGracePeriodSeconds not set (how long does it drain?)", d.Name))
			continue
		}
		if least, ok := minGracePeriod[d.Spec.Template.Labels[componentLabel]]; ok && *g < least {
			ps = append(ps, fmt.Sprintf("Deployment/%s: terminationGracePeriodSeconds %d, below %d", d.Name, *g, least))
		}
	}
	for comp := range minGracePeriod {
		if b.deployment(comp) == nil {
			ps = append(ps, fmt.Sprintf("no Deployment of component %q", comp))
		}
	}
	return ps
}

func (b *bundle) deployment(component string) *deployment {
	for _, d := range b.Deployments {
		if d.Spec.Template.Labels[nameLabel] == "nudge" && d.Spec.Template.Labels[componentLabel] == component {
			return d
		}
	}
	return nil
}

func ruleIngestConsumer(b *bundle) []string {
	d := b.deployment("ingest")
	if d == nil {
		return []string{"no ingest Deployment"}
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			if e.Name == "NUDGE_CONSUMER" {
				if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
					return []string{"ingest: NUDGE_CONSUMER must come from the pod name (fieldRef metadata.name)"}
				}
				return nil
			}
		}
	}
	return []string{"ingest: NUDGE_CONSUMER is not set (stable consumer name = pod name)"}
}

func ruleReplicas(b *bundle) []string {
	var ps []string
	shards := 0
	for _, cm := range b.ConfigMaps {
		if v, ok := cm.Data["NUDGE_SHARDS"]; ok {
			shards, _ = strconv.Atoi(v)
		}
	}
	if shards <= 0 {
		ps = append(ps, "no NUDGE_SHARDS in a ConfigMap")
	}
	if d := b.deployment("ingest"); d != nil {
		switch n := replicas(d); {
		case n < 2:
			ps = append(ps, fmt.Sprintf("ingest: %d replica(s), want at least 2", n))
		case shards > 0 && int(n) > shards:
			ps = append(ps, fmt.Sprintf("ingest: %d replicas for %d shards: the extra ones sit idle", n, shards))
		}
	}
	if d := b.deployment("flusher"); d != nil && replicas(d) < 2 {
		ps = append(ps, fmt.Sprintf("flusher: %d replica(s), want 2 (one holds the lease, one stands by)", replicas(d)))
	}
	if d := b.deployment("report"); d != nil && (replicas(d) < 1 || replicas(d) > 2) {
		ps = append(ps, fmt.Sprintf("report: %d replicas, want 1 or 2", replicas(d)))
	}
	return ps
}

func replicas(d *deployment) int32 {
	if d.Spec.Replicas == nil {
		return 1
	}
	return *d.Spec.Replicas
}

func selectorMatches(sel *metav1.LabelSelector, set map[string]string) bool {
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false
	}
	return s.Matches(labels.Set(set))
}

func rulePDBs(b *bundle) []string {
	var ps []string
	for _, d := range b.Deployments {
		var found bool
		for _, pdb := range b.PDBs {
			if !selectorMatches(pdb.Spec.Selector, d.Spec.Template.Labels) {
				continue
			}
			found = true
			if pdb.Spec.MinAvailable != nil && pdb.Spec.MinAvailable.Type == intstr.Int && pdb.Spec.MinAvailable.IntVal >= replicas(d) && d.Spec.Replicas != nil {
				ps = append(ps, fmt.Sprintf("PodDisruptionBudget/%s: minAvailable %d with %d replicas blocks every drain", pdb.Name, pdb.Spec.MinAvailable.IntVal, replicas(d)))
			}
		}
		if !found {
			ps = append(ps, fmt.Sprintf("Deployment/%s has no PodDisruptionBudget", d.Name))
		}
	}
	return ps
}

func ruleWorkerHPA(b *bundle) []string {
	d := b.deployment("worker")
	if d == nil {
		return []string{"no worker Deployment"}
	}
	var ps []string
	if d.Spec.Replicas != nil {
		ps = append(ps, "worker: spec.replicas is set; the HorizontalPodAutoscaler owns it (every apply would reset it)")
	}
	var found bool
	for _, h := range b.HPAs {
		ref := h.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.Name != d.Name || ref.APIVersion != "apps/v1" {
			continue
		}
		found = true
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 1 || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
			ps = append(ps, fmt.Sprintf("HorizontalPodAutoscaler/%s: bad replica bounds", h.Name))
		}
		if b.name == "overlays/production" && (h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2) {
			ps = append(ps, fmt.Sprintf("HorizontalPodAutoscaler/%s: production keeps at least 2 workers", h.Name))
		}
		cpu := false
		for _, m := range h.Spec.Metrics {
			if m.Resource != nil && m.Resource.Name == corev1.ResourceCPU {
				cpu = true
			}
		}
		if !cpu {
			ps = append(ps, fmt.Sprintf("HorizontalPodAutoscaler/%s: no CPU metric", h.Name))
		}
	}
	if !found {
		ps = append(ps, "worker: no HorizontalPodAutoscaler targets it")
	}
	return ps
}

func hasPolicyType(p *networkingv1.NetworkPolicy, t networkingv1.PolicyType) bool {
	if len(p.Spec.PolicyTypes) == 0 { // the API's defaults
		return t == networkingv1.PolicyTypeIngress || (t == networkingv1.PolicyTypeEgress && len(p.Spec.Egress) > 0)
	}
	return slices.Contains(p.Spec.PolicyTypes, t)
}

func portAllowed(ports []networkingv1.NetworkPolicyPort, port int32, proto corev1.Protocol) bool {
	if len(ports) == 0 {
		return true
	}
	for _, p := range ports {
		pp := corev1.ProtocolTCP
		if p.Protocol != nil {
			pp = *p.Protocol
		}
		if pp != proto {
			continue
		}
		if p.Port == nil {
			return true
		}
		if p.Port.Type == intstr.Int {
			end := p.Port.IntVal
			if p.EndPort != nil {
				end = *p.EndPort
			}
			if port >= p.Port.IntVal && port <= end {
				return true
			}
		}
	}
	return false
}

// allowed reports whether some policy lets pods with podLabels take
// (ingress) or open (egress) connections on port.
func (b *bundle) allowed(t networkingv1.PolicyType, podLabels map[string]string, port int32, proto corev1.Protocol) bool {
	for _, p := range b.Policies {
		if !hasPolicyType(p, t) || !selectorMatches(&p.Spec.PodSelector, podLabels) {
			continue
		}
		if t == networkingv1.PolicyTypeIngress {
			for _, r := range p.Spec.Ingress {
				if portAllowed(r.Ports, port, proto) {
					return true
				}
			}
		} else {
			for _, r := range p.Spec.Egress {
				if portAllowed(r.Ports, port, proto) {
					return true
				}
			}
		}
	}
	return false
}

func ruleNetworkPolicies(b *bundle) []string {
	var ps []string
	denyAll := false
	for _, p := range b.Policies {
		if len(p.Spec.PodSelector.MatchLabels) == 0 && len(p.Spec.PodSelector.MatchExpressions) == 0 &&
			hasPolicyType(p, networkingv1.PolicyTypeIngress) && hasPolicyType(p, networkingv1.PolicyTypeEgress) &&
			len(p.Spec.Ingress) == 0 && len(p.Spec.Egress) == 0 {
			denyAll = true
		}
		for _, r := range p.Spec.Ingress {
			if len(r.From) == 0 {
				ps = append(ps, fmt.Sprintf("NetworkPolicy/%s: an ingress rule without `from` admits every source", p.Name))
			}
			for _, peer := range r.From {
				if peer.IPBlock != nil && strings.HasSuffix(peer.IPBlock.CIDR, "/0") {
					ps = append(ps, fmt.Sprintf("NetworkPolicy/%s: ingress from %s", p.Name, peer.IPBlock.CIDR))
				}
			}
		}
	}
	if !denyAll {
		ps = append(ps, "no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)")
	}
	tcp, udp := corev1.ProtocolTCP, corev1.ProtocolUDP
	for _, w := range b.workloads() {
		if !b.allowed(networkingv1.PolicyTypeEgress, w.labels, 53, udp) || !b.allowed(networkingv1.PolicyTypeEgress, w.labels, 53, tcp) {
			ps = append(ps, fmt.Sprintf("%s: no DNS egress (53/UDP and 53/TCP)", w))
		}
		if w.labels[nameLabel] != "nudge" {
			continue
		}
		if w.kind != "Job" && !b.allowed(networkingv1.PolicyTypeEgress, w.labels, 6379, tcp) {
			ps = append(ps, fmt.Sprintf("%s: no egress to Redis (6379)", w))
		}
		if !b.allowed(networkingv1.PolicyTypeEgress, w.labels, 5432, tcp) {
			ps = append(ps, fmt.Sprintf("%s: no egress to PostgreSQL (5432)", w))
		}
		if w.kind == "Deployment" && !b.allowed(networkingv1.PolicyTypeIngress, w.labels, metricsPort, tcp) {
			ps = append(ps, fmt.Sprintf("%s: Prometheus cannot scrape port %d", w, metricsPort))
		}
		switch w.labels[componentLabel] {
		case "worker":
			if !b.allowed(networkingv1.PolicyTypeEgress, w.labels, 443, tcp) {
				ps = append(ps, fmt.Sprintf("%s: no egress to FCM/APNs (443)", w))
			}
		case "report":
			if !b.allowed(networkingv1.PolicyTypeIngress, w.labels, reportPort, tcp) {
				ps = append(ps, fmt.Sprintf("%s: the ingress controller cannot reach port %d", w, reportPort))
			}
		default:
			if b.allowed(networkingv1.PolicyTypeEgress, w.labels, 443, tcp) {
				ps = append(ps, fmt.Sprintf("%s: egress to 443, which only the worker needs", w))
			}
		}
	}
	return ps
}

// A ConfigMap key or literal env var named like a secret is fine only when
// its value is a file path (a mounted Secret); any value that looks like
// a credential is not.
var (
	secretishName   = regexp.MustCompile(`(?i)(passw|secret|token|private[_-]?key|api[_-]?key|credential|auth)`)
	secretishValues = []*regexp.Regexp{
		regexp.MustCompile(`-----BEGIN [A-Z ]*PRIVATE KEY-----`),
		regexp.MustCompile(`(?i)\b[a-z][a-z0-9+.-]*://[^/\s@:]*:[^/\s@]+@`), // URL with a password
		regexp.MustCompile(`"private_key"\s*:`),
		regexp.MustCompile(`(?i)\bbearer\s+[a-z0-9._~+/=-]{8,}`),
		regexp.MustCompile(`(?im)^\s*(requirepass|masterauth)\s+\S`),
		regexp.MustCompile(`(?im)^\s*user\s+\S+.*\s[>#]\S`), // Redis ACL user with a password
		regexp.MustCompile(`\b(AKIA|ASIA)[0-9A-Z]{16}\b`),
		regexp.MustCompile(`\bgh[pousr]_[A-Za-z0-9]{36}\b`),
		regexp.MustCompile(`\bAIza[0-9A-Za-z_-]{35}\b`), // Google API key
	}
)

func looksSecret(key, value string) string {
	if secretishName.MatchString(key) && value != "" && !strings.HasPrefix(value, "/") {
		return "a secret's name"
	}
	for _, re := range secretishValues {
		if re.MatchString(value) {
			return "a credential-like value (" + re.String() + ")"
		}
	}
	return ""
}

func ruleNoSecretsInConfig(b *bundle) []string {
	var ps []string
	for _, cm := range b.ConfigMaps {
		for _, k := range sortedKeys(cm.Data) {
			if why := looksSecret(k, cm.Data[k]); why != "" {
				ps = append(ps, fmt.Sprintf("ConfigMap/%s key %q holds %s: put it in a Secret", cm.Name, k, why))
			}
		}
		if len(cm.BinaryData) > 0 {
			ps = append(ps, fmt.Sprintf("ConfigMap/%s has binaryData", cm.Name))
		}
	}
	for _, c := range b.containers() {
		for _, e := range c.c.Env {
			if e.ValueFrom != nil {
				continue
			}
			if why := looksSecret(e.Name, e.Value); why != "" {
				ps = append(ps, fmt.Sprintf("%s: env %s holds %s: use a secretKeyRef", c, e.Name, why))
			}
		}
		for _, arg := range append(slices.Clone(c.c.Command), c.c.Args...) {
			if why := looksSecret("", arg); why != "" {
				ps = append(ps, fmt.Sprintf("%s: an argument holds %s", c, why))
			}
		}
	}
	return ps
}

type ref struct {
	kind, name, key string // kind "Secret" or "ConfigMap"; key "" for the whole object
	optional        bool
	from            string
}

func (b *bundle) refs() []ref {
	var rs []ref
	opt := func(p *bool) bool { return p != nil && *p }
	for _, c := range b.containers() {
		for _, e := range c.c.Env {
			if e.ValueFrom == nil {
				continue
			}
			if s := e.ValueFrom.SecretKeyRef; s != nil {
				rs = append(rs, ref{"Secret", s.Name, s.Key, opt(s.Optional), c.String()})
			}
			if m := e.ValueFrom.ConfigMapKeyRef; m != nil {
				rs = append(rs, ref{"ConfigMap", m.Name, m.Key, opt(m.Optional), c.String()})
			}
		}
		for _, ef := range c.c.EnvFrom {
			if ef.SecretRef != nil {
				rs = append(rs, ref{"Secret", ef.SecretRef.Name, "", opt(ef.SecretRef.Optional), c.String()})
			}
			if ef.ConfigMapRef != nil {
				rs = append(rs, ref{"ConfigMap", ef.ConfigMapRef.Name, "", opt(ef.ConfigMapRef.Optional), c.String()})
			}
		}
	}
	for _, w := range b.workloads() {
		for _, v := range w.spec.Volumes {
			if s := v.Secret; s != nil {
				if len(s.Items) == 0 {
					rs = append(rs, ref{"Secret", s.SecretName, "", opt(s.Optional), w.String()})
				}
				for _, it := range s.Items {
					rs = append(rs, ref{"Secret", s.SecretName, it.Key, opt(s.Optional), w.String()})
				}
			}
			if m := v.ConfigMap; m != nil {
				if len(m.Items) == 0 {
					rs = append(rs, ref{"ConfigMap", m.Name, "", opt(m.Optional), w.String()})
				}
				for _, it := range m.Items {
					rs = append(rs, ref{"ConfigMap", m.Name, it.Key, opt(m.Optional), w.String()})
				}
			}
		}
	}
	return rs
}

// ruleReferences: ConfigMaps referenced exist everywhere; Secrets exist in
// dev (self-contained), and elsewhere are exactly secretContract.
func ruleReferences(b *bundle) []string {
	var ps []string
	cms := map[string]map[string]string{}
	for _, cm := range b.ConfigMaps {
		cms[cm.Name] = cm.Data
	}
	secrets := map[string]map[string][]byte{}
	for _, s := range b.Secrets {
		data := map[string][]byte{}
		for k, v := range s.Data {
			data[k] = v
		}
		for k, v := range s.StringData {
			data[k] = []byte(v)
		}
		secrets[s.Name] = data
	}
	used := map[string]bool{}
	for _, r := range b.refs() {
		switch r.kind {
		case "ConfigMap":
			data, ok := cms[r.name]
			if _, hasKey := data[r.key]; !ok || (r.key != "" && !hasKey) {
				ps = append(ps, fmt.Sprintf("%s: ConfigMap %q key %q does not exist", r.from, r.name, r.key))
			}
		case "Secret":
			if b.name == "overlays/dev" {
				data, ok := secrets[r.name]
				if _, hasKey := data[r.key]; !r.optional && (!ok || (r.key != "" && !hasKey)) {
					ps = append(ps, fmt.Sprintf("%s: Secret %q key %q is not generated by the dev overlay", r.from, r.name, r.key))
				}
				continue
			}
			if r.key == "" && wholeSecrets[r.name] && !r.optional {
				for _, k := range secretContract[r.name] {
					used[r.name+"/"+k] = true
				}
				continue
			}
			allowed := secretContract[r.name]
			if r.optional {
				allowed = append(slices.Clone(allowed), optionalSecretKeys[r.name]...)
			}
			if !slices.Contains(allowed, r.key) {
				ps = append(ps, fmt.Sprintf("%s: Secret %q key %q is not in the documented contract (secretContract, deploy/README.md)", r.from, r.name, r.key))
			}
			if !r.optional {
				used[r.name+"/"+r.key] = true
			}
		}
	}
	if b.name != "overlays/dev" {
		for _, name := range sortedKeys(secretContract) {
			for _, k := range secretContract[name] {
				if !used[name+"/"+k] {
					ps = append(ps, fmt.Sprintf("Secret %q key %q is documented but no pod uses it", name, k))
				}
			}
		}
	}
	return ps
}

func ruleServices(b *bundle) []string {
	var ps []string
	for _, s := range b.Services {
		if len(s.Spec.Selector) == 0 {
			ps = append(ps, fmt.Sprintf("Service/%s: no selector", s.Name))
			continue
		}
		if s.Spec.Type == corev1.ServiceTypeLoadBalancer || s.Spec.Type == corev1.ServiceTypeNodePort {
			ps = append(ps, fmt.Sprintf("Service/%s: type %s exposes it outside the cluster; use the ingress", s.Name, s.Spec.Type))
		}
		matched := 0
		for _, w := range b.workloads() {
			if !labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(w.labels)) || w.kind == "Job" {
				continue
			}
			matched++
			for _, sp := range s.Spec.Ports {
				if sp.TargetPort.Type != intstr.String {
					continue
				}
				found := false
				for i := range w.spec.Containers {
					if probePort(&w.spec.Containers[i], sp.TargetPort) != 0 {
						found = true
					}
				}
				if !found {
					ps = append(ps, fmt.Sprintf("Service/%s: %s has no port named %q", s.Name, w, sp.TargetPort.StrVal))
				}
			}
		}
		if matched == 0 {
			ps = append(ps, fmt.Sprintf("Service/%s selects no pod", s.Name))
		}
	}
	if d := b.deployment("report"); d != nil {
		ok := false
		for _, s := range b.Services {
			if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
				for _, p := range s.Spec.Ports {
					if probePort(&d.Spec.Template.Spec.Containers[0], p.TargetPort) == reportPort {
						ok = true
					}
				}
			}
		}
		if !ok {
			ps = append(ps, fmt.Sprintf("no Service reaches report's HTTP port %d", reportPort))
		}
	}
	return ps
}

func ruleMigrationJob(b *bundle) []string {
	for _, j := range b.Jobs {
		if j.Spec.Template.Labels[componentLabel] != "migrate" {
			continue
		}
		var ps []string
		c := j.Spec.Template.Spec.Containers
		if len(c) != 1 || !slices.Equal(c[0].Command, []string{"/usr/local/bin/migrate", "up"}) {
			ps = append(ps, fmt.Sprintf("Job/%s: must run `migrate up`", j.Name))
		}
		if rp := j.Spec.Template.Spec.RestartPolicy; rp != corev1.RestartPolicyOnFailure && rp != corev1.RestartPolicyNever {
			ps = append(ps, fmt.Sprintf("Job/%s: restartPolicy %q", j.Name, rp))
		}
		if j.Spec.BackoffLimit == nil || j.Spec.ActiveDeadlineSeconds == nil || j.Spec.TTLSecondsAfterFinished == nil {
			ps = append(ps, fmt.Sprintf("Job/%s: set backoffLimit, activeDeadlineSeconds and ttlSecondsAfterFinished", j.Name))
		}
		return ps
	}
	return []string{"no migration Job (component migrate)"}
}

func ruleSecretsPerOverlay(b *bundle) []string {
	var ps []string
	switch b.name {
	case "overlays/dev":
		for _, s := range b.Secrets {
			if s.Labels[devOnlyLabel] != "true" {
				ps = append(ps, fmt.Sprintf("Secret/%s: dev Secrets carry %s=true", s.Name, devOnlyLabel))
			}
		}
	default:
		for _, s := range b.Secrets {
			ps = append(ps, fmt.Sprintf("Secret/%s: %s must not contain Secrets (they are created out of band)", s.Name, b.name))
		}
		for _, cm := range b.ConfigMaps {
			if _, ok := cm.Labels[devOnlyLabel]; ok {
				ps = append(ps, fmt.Sprintf("ConfigMap/%s carries the dev-only label", cm.Name))
			}
		}
		for _, w := range b.workloads() {
			if _, ok := w.labels[devOnlyLabel]; ok {
				ps = append(ps, fmt.Sprintf("%s carries the dev-only label", w))
			}
			for _, c := range w.spec.InitContainers {
				if strings.Contains(strings.Join(c.Command, " "), "pushsandbox") {
					ps = append(ps, fmt.Sprintf("%s runs the push sandbox", w))
				}
			}
		}
	}
	return ps
}

// ruleDevRedisPersistence: the dev Redis is configured as production must
// be (deploy/README.md): AOF fsynced every second, no eviction.
func ruleDevRedisPersistence(b *bundle) []string {
	for _, cm := range b.ConfigMaps {
		conf, ok := cm.Data["redis.conf"]
		if !ok {
			continue
		}
		var ps []string
		for _, want := range []string{"appendonly yes", "appendfsync everysec", "maxmemory-policy noeviction"} {
			if !regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(want) + `\s*$`).MatchString(conf) {
				ps = append(ps, fmt.Sprintf("ConfigMap/%s redis.conf lacks %q", cm.Name, want))
			}
		}
		return ps
	}
	return []string{"no redis.conf ConfigMap in the dev overlay"}
}
