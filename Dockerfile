# The gpushare image, as `make image` builds it without Docker (tests/tools/image/build.sh): a static
# release binary (glibc, crt-static) on an empty base with a passwd naming uid 65532, non-root, no
# shell, as manifests/deployment.yaml expects. Build where a Docker engine runs:
#   docker build -t ghcr.io/gpushare/gpushare:0.1.0 .
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY benches benches
RUN RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    cargo build --release --locked --target x86_64-unknown-linux-gnu --bin gpushare \
 && mkdir -p /rootfs/tmp /rootfs/home/nonroot \
 && chmod 1777 /rootfs/tmp && chmod 0700 /rootfs/home/nonroot && chown 65532:65532 /rootfs/home/nonroot

FROM scratch
COPY --from=build /rootfs/ /
COPY tests/tools/image/rootfs/etc/passwd tests/tools/image/rootfs/etc/group /etc/
COPY --from=build /src/target/x86_64-unknown-linux-gnu/release/gpushare /usr/local/bin/gpushare
ENV PATH=/usr/local/bin
USER 65532:65532
EXPOSE 8443
ENTRYPOINT ["/usr/local/bin/gpushare"]
CMD ["serve"]
