# syntax=docker/dockerfile:1
# Build: docker build -t crowdpass .   Run: docker compose up
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/root/.cache/go-build \
    --mount=type=cache,target=/go/pkg/mod \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/crowdpass ./cmd/crowdpass

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/crowdpass /usr/local/bin/crowdpass
USER nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/crowdpass"]
CMD ["serve"]
