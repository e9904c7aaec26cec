# The gpushare image: a static-enough release binary on a distroless base, non-root (uid 65532,
# as manifests/deployment.yaml expects). Build: docker build -t ghcr.io/gpushare/gpushare:0.1.0 .
# Note: no Docker engine runs on the project's development machines, so this file is not built by CI.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
RUN cargo build --release --locked --bin gpushare

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/gpushare /usr/local/bin/gpushare
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/gpushare"]
CMD ["serve"]
