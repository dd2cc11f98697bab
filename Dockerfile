# syntax=docker/dockerfile:1
#
# ecst and the customers example's services, as small non-root images.
#
#   docker build -t ecst .                                   # the ecst CLI (the default target)
#   docker build --target customers-api -t customers-api .   # the example producer service
#   docker build --target billing -t billing .               # the example consumer service
#
# All three are static Go binaries (CGO_ENABLED=0, -trimpath) on Alpine. Alpine
# rather than distroless because the health checks in docker-compose.yml need an
# HTTP client inside the container, and BusyBox's wget is one.
#
# ecst --version reads the Go build info. The build context leaves .git out (see
# .dockerignore), so the binary carries no commit: VERSION (--build-arg
# VERSION=$(git describe --always --dirty)) names the build and labels the image.

ARG GO_VERSION=1.26.8
ARG ALPINE_VERSION=3.22

FROM golang:${GO_VERSION} AS build
ARG VERSION=dev
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-trimpath
# Dependencies first: this layer is reused until go.mod or go.sum change.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod \
    --mount=type=cache,target=/root/.cache/go-build \
    go build -buildvcs=false -ldflags="-s -w -X github.com/ecst-io/ecst/internal/cli.Version=${VERSION}" -o /out/ \
      ./cmd/ecst \
      ./examples/customers/cmd/customers-api \
      ./examples/customers/cmd/billing

FROM alpine:${ALPINE_VERSION} AS runtime
ARG VERSION=dev
LABEL org.opencontainers.image.source="https://github.com/ecst-io/ecst" \
      org.opencontainers.image.version="${VERSION}"
# Alpine's base already carries the CA bundle (TLS to brokers and registries);
# tzdata is not needed (ecst writes UTC everywhere). Nothing to install.
RUN addgroup -S -g 10001 ecst \
 && adduser -S -D -H -u 10001 -G ecst -s /sbin/nologin ecst
WORKDIR /etc/ecst
USER 10001:10001

FROM runtime AS customers-api
COPY --from=build /out/customers-api /usr/local/bin/customers-api
EXPOSE 8080
ENTRYPOINT ["customers-api"]
CMD ["--config", "/etc/ecst/ecst.yaml", "--addr", ":8080"]

FROM runtime AS billing
COPY --from=build /out/billing /usr/local/bin/billing
EXPOSE 8082
ENTRYPOINT ["billing"]
CMD ["--config", "/etc/ecst/ecst.yaml", "--addr", ":8082"]

# The last stage is the default target: the ecst CLI. It reads ./ecst.yaml from
# its working directory, /etc/ecst: mount your config there.
FROM runtime AS ecst
COPY --from=build /out/ecst /usr/local/bin/ecst
EXPOSE 9464
ENTRYPOINT ["ecst"]
CMD ["--help"]
