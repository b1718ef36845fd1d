# syntax=docker/dockerfile:1
# One image for simulate, persist and detect (ROUTER_HANDLERS chooses).
# Build stage on the build machine's platform, cross-compiling to the target's,
# so an arm64 laptop does not emulate the Go toolchain.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG TARGETOS TARGETARCH
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/heartbeat .

# Runtime: a static binary on distroless (no shell, no package manager), as
# the unprivileged "nonroot" user (uid 65532). Health checks use the binary
# itself: `/heartbeat healthcheck URL`.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/heartbeat /heartbeat
USER nonroot:nonroot
EXPOSE 8000 8001 8002
ENTRYPOINT ["/heartbeat"]
