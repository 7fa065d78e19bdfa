package validate

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// deployDir is deploy/ of the repository, found from this file's path so
// that the test runs from any working directory.
func deployDir(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// repoRoot is the repository's root directory.
func repoRoot(t testing.TB) string { return filepath.Dir(deployDir(t)) }

// kustomizations are the directories rendered, with the namespace each
// must put every namespaced object in ("" for the base: none).
var kustomizations = []struct {
	dir       string
	namespace string
}{
	{"k8s/base", ""},
	{"k8s/overlays/dev", "nudge-dev"},
	{"k8s/overlays/production", "nudge"},
}

// bundle is one rendered kustomization, decoded into the API types.
type bundle struct {
	name      string // e.g. "overlays/dev"
	namespace string // expected namespace of namespaced objects ("" for the base)

	Deployments  []*appsv1.Deployment
	StatefulSets []*appsv1.StatefulSet
	Jobs         []*batchv1.Job
	Services     []*corev1.Service
	ConfigMaps   []*corev1.ConfigMap
	Secrets      []*corev1.Secret
	Namespaces   []*corev1.Namespace
	Accounts     []*corev1.ServiceAccount
	PDBs         []*policyv1.PodDisruptionBudget
	HPAs         []*autoscalingv2.HorizontalPodAutoscaler
	Policies     []*networkingv1.NetworkPolicy

	objects []k8sruntime.Object // all of the above, in the order rendered
}

// scheme knows every kind the manifests may contain. A kind missing here
// fails the decoding: add it deliberately, with its rules.
func newScheme() *k8sruntime.Scheme {
	s := k8sruntime.NewScheme()
	for _, add := range []func(*k8sruntime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme, policyv1.AddToScheme,
		autoscalingv2.AddToScheme, networkingv1.AddToScheme,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// strictDecoder fails on unknown and duplicate fields.
var strictDecoder = serializer.NewCodecFactory(newScheme(), serializer.EnableStrict).UniversalDeserializer()

// decodeStrict decodes one YAML or JSON object into its API type.
func decodeStrict(doc []byte) (k8sruntime.Object, error) {
	obj, gvk, err := strictDecoder.Decode(doc, nil, nil)
	if err != nil {
		kind := "?"
		if gvk != nil {
			kind = gvk.String()
		}
		return nil, fmt.Errorf("%s: %w", kind, err)
	}
	return obj, nil
}

// render builds a kustomization with kustomize's Go library, as
// `kustomize build` (and `kubectl apply -k`) would, and returns each object
// as YAML.
func render(dir string) ([][]byte, error) {
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, err
	}
	var docs [][]byte
	for _, r := range m.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			return nil, fmt.Errorf("%s/%s: %w", r.GetKind(), r.GetName(), err)
		}
		docs = append(docs, b)
	}
	return docs, nil
}

// load renders and strictly decodes one kustomization.
func load(t testing.TB, dir, namespace string) *bundle {
	t.Helper()
	docs, err := render(filepath.Join(deployDir(t), dir))
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	b := &bundle{name: strings.TrimPrefix(dir, "k8s/"), namespace: namespace}
	var errs []string
	for _, doc := range docs {
		obj, err := decodeStrict(doc)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%v\n%s", err, firstLines(doc, 4)))
			continue
		}
		if err := b.add(obj); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		t.Fatalf("%s: %d object(s) do not decode strictly:\n%s", dir, len(errs), strings.Join(errs, "\n"))
	}
	return b
}

func (b *bundle) add(obj k8sruntime.Object) error {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		b.Deployments = append(b.Deployments, o)
	case *appsv1.StatefulSet:
		b.StatefulSets = append(b.StatefulSets, o)
	case *batchv1.Job:
		b.Jobs = append(b.Jobs, o)
	case *corev1.Service:
		b.Services = append(b.Services, o)
	case *corev1.ConfigMap:
		b.ConfigMaps = append(b.ConfigMaps, o)
	case *corev1.Secret:
		b.Secrets = append(b.Secrets, o)
	case *corev1.Namespace:
		b.Namespaces = append(b.Namespaces, o)
	case *corev1.ServiceAccount:
		b.Accounts = append(b.Accounts, o)
	case *policyv1.PodDisruptionBudget:
		b.PDBs = append(b.PDBs, o)
	case *autoscalingv2.HorizontalPodAutoscaler:
		b.HPAs = append(b.HPAs, o)
	case *networkingv1.NetworkPolicy:
		b.Policies = append(b.Policies, o)
	default:
		return fmt.Errorf("%T: a kind the validation has no rules for; add it to bundle.add and its rules", obj)
	}
	b.objects = append(b.objects, obj)
	return nil
}

// workload is a pod template and where it comes from.
type workload struct {
	kind, name string
	labels     map[string]string
	spec       *corev1.PodSpec
	longLived  bool // Deployments and StatefulSets: probes required
}

func (w workload) String() string { return w.kind + "/" + w.name }

func (b *bundle) workloads() []workload {
	var ws []workload
	for _, d := range b.Deployments {
		ws = append(ws, workload{"Deployment", d.Name, d.Spec.Template.Labels, &d.Spec.Template.Spec, true})
	}
	for _, s := range b.StatefulSets {
		ws = append(ws, workload{"StatefulSet", s.Name, s.Spec.Template.Labels, &s.Spec.Template.Spec, true})
	}
	for _, j := range b.Jobs {
		ws = append(ws, workload{"Job", j.Name, j.Spec.Template.Labels, &j.Spec.Template.Spec, false})
	}
	return ws
}

// container is one container of a workload.
type container struct {
	w       workload
	c       *corev1.Container
	init    bool // an init container
	sidecar bool // an init container with restartPolicy Always (runs beside the others)
}

func (c container) String() string {
	kind := "container"
	switch {
	case c.sidecar:
		kind = "sidecar"
	case c.init:
		kind = "init container"
	}
	return fmt.Sprintf("%s %s %q", c.w, kind, c.c.Name)
}

func (b *bundle) containers() []container {
	var cs []container
	for _, w := range b.workloads() {
		for i := range w.spec.InitContainers {
			c := &w.spec.InitContainers[i]
			sidecar := c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
			cs = append(cs, container{w, c, true, sidecar})
		}
		for i := range w.spec.Containers {
			cs = append(cs, container{w, &w.spec.Containers[i], false, false})
		}
	}
	return cs
}

func firstLines(b []byte, n int) string {
	lines := bytes.SplitN(b, []byte("\n"), n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return "    " + string(bytes.Join(lines, []byte("\n    ")))
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

type deployment = appsv1.Deployment
