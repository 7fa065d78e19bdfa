// Package validate holds the offline checks of Nudge's deployment files
// (deploy/): the Kustomize overlays rendered and decoded strictly into the
// Kubernetes API types, the Grafana dashboard and the Dockerfile. It is a
// module of its own so that the root module does not depend on Kubernetes.
//
//	cd deploy/k8s/validate && go test ./...
package validate
