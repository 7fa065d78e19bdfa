# Nudge: every command (ingest, worker, flusher, report, migrate, publish,
# loadgen, pushsandbox, demo) in one small image, /usr/local/bin/<command>.
#
#   docker build -t ghcr.io/nudgehq/nudge:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/nudgehq/nudge:0.1.0 --push .
#
# The image has no entrypoint: run a command by name, e.g.
#   docker run --rm ghcr.io/nudgehq/nudge:0.1.0 worker -h
# (the Kubernetes manifests in deploy/k8s set `command` for each pod).
#
# Base images are pinned by tag. For releases, pin them by digest too
# (golang:1.26.8-bookworm@sha256:..., let Renovate/Dependabot bump them):
# tags of both images are re-pushed with security fixes.

# Build stage: a static, pure-Go build (no cgo), cross-compiled on the
# builder's own platform for the target one.
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm AS build
ARG TARGETOS=linux
ARG TARGETARCH=amd64
WORKDIR /src
# Modules first, so that a code change reuses the download layer.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod \
    go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags='-s -w' -o /out/ ./cmd/...

# Final stage: distroless static, user nonroot (65532), no shell, no
# package manager. It carries CA certificates (FCM, APNs, rediss://) and
# the time zone database (quiet hours in users' zones), all Nudge needs
# from an OS.
FROM gcr.io/distroless/static-debian12:nonroot
LABEL org.opencontainers.image.source="https://github.com/nudgehq/nudge" \
      org.opencontainers.image.title="nudge" \
      org.opencontainers.image.description="Nudge: unread reminders and analytics for chat apps (all commands)"
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
# report serve (admin API/dashboard) and every command's /metrics, /healthz, /readyz.
EXPOSE 8090 9090
