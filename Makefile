# gpushare developer tasks. `make run` and `make test` are the two set-up commands.
CARGO ?= cargo
BIN := target/debug/gpushare
KUBECTL ?= kubectl

.PHONY: build run test lint fmt certs check-examples deploy inject-ca undeploy bench bench-wrk bench-cluster clean cluster cluster-down e2e e2e-releases controlplane install

# `make install`: gpushare and the kubectl plugin kubectl-gpushare (a link to it) into BINDIR.
# PROFILE=dev installs the debug build (fast, for trying it out).
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
PROFILE ?= release
PROFILE_DIR := $(if $(filter dev,$(PROFILE)),debug,$(PROFILE))

build:
	$(CARGO) build

# The webhook in standalone mode on the embedded default policy, on https://127.0.0.1:8443.
run: build certs/tls.crt
	$(BIN) serve --standalone --listen 127.0.0.1:8443 --tls-cert certs/tls.crt --tls-key certs/tls.key $(ARGS)

certs/tls.crt:
	$(CARGO) run --quiet -- certs --out certs > /dev/null

certs:
	$(CARGO) run --quiet -- certs --out certs

test:
	$(CARGO) test --locked --lib --bins --tests
	$(MAKE) --no-print-directory check-examples

# The fuzz targets' checks (fuzz/fuzz_targets/*_check.rs) are linted as part of tests/fuzz_seeds.rs,
# which also keeps them compiling in `make test`; the fuzz crate itself (a workspace of its own,
# whose dependencies get other features) is not built here: on a cold machine that took 5 minutes.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets --features e2e -- -D warnings

fmt:
	$(CARGO) fmt --all

# Every example must get the verdict its file name says. A first line
# `# gpushare-check-args: ...` gives the example its own arguments (default: --gpus 2).
check-examples: build
	@set -e; for f in examples/allowed-*.yaml examples/denied-*.yaml; do \
	  args=$$(sed -n '1s/^# gpushare-check-args: //p' $$f); \
	  [ -n "$$args" ] || args="--gpus 2"; \
	  set +e; $(BIN) check $$args $$f > /dev/null 2>&1; code=$$?; set -e; \
	  case $$f in examples/allowed-*) want=0;; *) want=1;; esac; \
	  if [ $$code -ne $$want ]; then echo "FAIL $$f: exit $$code, want $$want"; $(BIN) check $$args $$f || true; exit 1; fi; \
	  echo "ok   $$f (exit $$code)"; \
	done

# Deploys to the current kubectl context with fresh certificates in the gpushare-tls Secret
# and their CA injected as the caBundle of every webhook of the configuration.
deploy: build
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(BIN) certs --out $$tmp > $$tmp/ca-bundle; \
	$(KUBECTL) apply -k manifests/; \
	$(KUBECTL) -n gpushare-system create secret tls gpushare-tls --cert=$$tmp/tls.crt --key=$$tmp/tls.key \
	  --dry-run=client -o yaml | $(KUBECTL) apply -f -; \
	$(MAKE) --no-print-directory inject-ca CA_BUNDLE_FILE=$$tmp/ca-bundle

# Sets caBundle on EVERY webhook of WEBHOOK_CONFIGURATION (counted from the stored object, so a
# webhook added later is never left untrusted) from CA_BUNDLE_FILE (base64 PEM, as `gpushare certs`
# prints it).
WEBHOOK_CONFIGURATION ?= gpushare
inject-ca:
	@test -s "$(CA_BUNDLE_FILE)" || { echo "inject-ca: CA_BUNDLE_FILE is empty or missing"; exit 1; }
	@bundle=$$(tr -d '\n' < "$(CA_BUNDLE_FILE)"); \
	count=$$($(KUBECTL) get mutatingwebhookconfiguration $(WEBHOOK_CONFIGURATION) -o jsonpath='{range .webhooks[*]}x{end}' | wc -c); \
	test "$$count" -gt 0 || { echo "inject-ca: $(WEBHOOK_CONFIGURATION) has no webhooks"; exit 1; }; \
	patch=$$(i=0; sep=; printf '['; while [ $$i -lt $$count ]; do \
	  printf '%s{"op":"add","path":"/webhooks/%d/clientConfig/caBundle","value":"%s"}' "$$sep" $$i "$$bundle"; \
	  sep=,; i=$$((i + 1)); done; printf ']'); \
	$(KUBECTL) patch mutatingwebhookconfiguration $(WEBHOOK_CONFIGURATION) --type=json -p "$$patch" >/dev/null; \
	echo "caBundle set on $$count webhooks of $(WEBHOOK_CONFIGURATION)"

undeploy:
	$(KUBECTL) delete -k manifests/ --ignore-not-found

# Load benchmark of the release binary against a bare axum+rustls ceiling (server on core 0, load
# generator on core 1); prints a table and writes target/bench-results.md. Knobs: BENCH_SECONDS,
# BENCH_WARMUP_SECONDS, BENCH_REQUESTS, BENCH_LEVELS, BENCH_INFO_LOG=0; BENCH_BASELINE_BIN=<an older
# gpushare> runs it beside this build (A/B in one run); soak: BENCH_SOAK_SECONDS=300
# BENCH_RATE=<req/s> (see BENCHMARKS.md).
bench: bench-bin
	$(CARGO) bench --locked --bench review
	bash benches/review_instructions.sh
	BENCH_GPUSHARE_BIN=$(BENCH_BIN) $(CARGO) bench --locked --bench admission
	$(MAKE) --no-print-directory bench-wrk
	$(CARGO) bench --locked --bench cluster_scale
	$(MAKE) --no-print-directory bench-cluster

# The same servers and targets with wrk as the load generator (BENCH_LOAD_TOOL=wrk; Debian's wrk,
# installed when missing, on core 1): one managed-mps AdmissionReview per request over HTTPS
# keep-alive at concurrency 16 and 64; writes target/bench-results-wrk.md. Same knobs as above.
bench-wrk: bench-bin
	command -v wrk >/dev/null || (apt-get update -q && apt-get install -y -q wrk)
	BENCH_GPUSHARE_BIN=$(BENCH_BIN) BENCH_LOAD_TOOL=wrk $(CARGO) bench --locked --bench admission

# The admission benches measure the release build users install, copied aside: `cargo bench`
# relinks target/release/gpushare with the dev-dependencies' features unified in.
BENCH_BIN := target/bench-bin/gpushare
.PHONY: bench-bin
bench-bin:
	$(CARGO) build --locked --release --bin gpushare
	mkdir -p $(dir $(BENCH_BIN)) && cp target/release/gpushare $(BENCH_BIN)

# The ledger and commits through the real kube-apiserver and etcd: gpushare's release image, 2
# replicas (`make cluster IN_CLUSTER=1`), 100 / 2,000 / 20,000 managed workloads over 100 nodes.
# Not in `make test` or CI (it takes tens of minutes); CLUSTER_API_SIZES picks other sizes.
bench-cluster:
	$(MAKE) --no-print-directory cluster IN_CLUSTER=1
	$(CARGO) bench --locked --bench cluster_api

# gpushare's image without a Docker engine: an OCI archive (IMAGE_ARCHIVE, named IMAGE) of a static
# release binary, non-root (65532), no shell; the Dockerfile builds the same where Docker runs.
# Load it with `ctr images import`, `docker load`, `podman load` or `skopeo copy oci-archive:...`.
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
IMAGE ?= localhost/gpushare:$(VERSION)
IMAGE_ARCHIVE ?= target/image/gpushare.oci.tar
# Static glibc: the only target of the machine's rustup, linked with crt-static.
IMAGE_TARGET := x86_64-unknown-linux-gnu
IMAGE_BIN := target/$(IMAGE_TARGET)/release/gpushare

.PHONY: image image-bin layout
image: image-bin
	bash tests/tools/image/build.sh gpushare $(IMAGE_BIN) $(IMAGE) $(IMAGE_ARCHIVE)

image-bin:
	RUSTFLAGS='-C target-feature=+crt-static' CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=debuginfo \
	  $(CARGO) build --locked --release --target $(IMAGE_TARGET) --bin gpushare

# Rewrites tests/tools/layout/gpushare.order, the functions and constants a standalone server
# touches, which build.rs has rust-lld pack together in release builds (issue 26, BENCHMARKS.md
# "Code layout"): callgrind (valgrind) of the release build and of the image's, then passes of
# page-fault recording (perf) under the admission bench's load, relinking after each, until a pass
# adds nothing (at most LAYOUT_PASSES). Not in CI; rerun it after a toolchain or dependency update
# (a stale file only loses the packing).
LAYOUT_PASSES ?= 10
ORDER := tests/tools/layout/gpushare.order
layout: image-bin
	$(CARGO) build --locked --release --bin gpushare
	bash tests/tools/layout/record.sh $(ORDER) target/release/gpushare $(IMAGE_BIN)
	for pass in $$(seq 1 $(LAYOUT_PASSES)); do \
	  $(CARGO) build --locked --release --bin gpushare || exit 1; \
	  $(MAKE) --no-print-directory image-bin || exit 1; \
	  added=$$(bash tests/tools/layout/faults.sh $(ORDER) $(CURDIR)/target/release/gpushare $(CURDIR)/$(IMAGE_BIN) | tail -1) || exit 1; \
	  echo "layout pass $$pass: $$added names added"; \
	  if [ "$$added" = 0 ]; then break; fi; \
	done

# A real cluster on loopback (CONTRACT section 6b, docs/development.md): etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and a kubelet of the release pinned in
# tests/tools/controlplane/go.mod, built with `go build` (the first time 10-25 minutes on 2 cores, then from Go's
# build cache); edge-node-1 a real node on containerd (needs root); gpushare deployed from manifests/
# with `gpushare serve` running locally in cluster mode, or with IN_CLUSTER=1 as the Deployment of
# manifests/ from its image (make image). Idempotent.
# KUBE_VERSION=x.y.z: another release, one of tests/tools/controlplane/releases/ (pin-release.sh
# adds one), built once into target/controlplane/<x.y.z>/bin; unset, the pinned default.
IN_CLUSTER ?= 0
KUBE_VERSION ?=
export KUBE_VERSION
cluster: build $(if $(filter 1,$(IN_CLUSTER)),image)
	@GPUSHARE=$(CURDIR)/$(BIN) IN_CLUSTER=$(IN_CLUSTER) GPUSHARE_IMAGE=$(IMAGE) \
	  GPUSHARE_IMAGE_ARCHIVE=$(CURDIR)/$(IMAGE_ARCHIVE) bash tests/e2e/cluster.sh up

cluster-down:
	@bash tests/e2e/cluster.sh down

controlplane:
	@bash tests/e2e/cluster.sh build

# The end-to-end suite against `make cluster` (started when needed), through the real kubectl and
# kube-apiserver. Tests run one at a time: some change the cluster-wide policy or stop components.
e2e: cluster helm
	$(CARGO) test --locked --features e2e --test e2e -- --test-threads=1

# `make e2e` on every release of the README's table (the pinned default and each module under
# tests/tools/controlplane/releases/), each on a fresh cluster; a summary at the end.
KUBE_RELEASES ?= $(shell ls tests/tools/controlplane/releases 2>/dev/null | sort -t. -k2,2n -k3,3n) default
e2e-releases:
	@failed=; for v in $(KUBE_RELEASES); do \
	  release=$$v; [ $$v != default ] || release=; \
	  $(MAKE) --no-print-directory cluster-down; \
	  echo "==== make e2e KUBE_VERSION=$$release"; \
	  $(MAKE) --no-print-directory e2e KUBE_VERSION=$$release || failed="$$failed $$v"; \
	done; \
	$(MAKE) --no-print-directory cluster-down; \
	if [ -n "$$failed" ]; then echo "make e2e failed on:$$failed"; exit 1; fi; \
	echo "make e2e passed on: $(KUBE_RELEASES)"

clean:
	$(CARGO) clean

# kubectl finds plugins as executables named kubectl-<name> on the PATH; the binary behaves as
# `gpushare` under either name (`kubectl gpushare status`, `check`, `apply -f`).
install:
	$(CARGO) build --locked --profile $(PROFILE)
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 target/$(PROFILE_DIR)/gpushare $(DESTDIR)$(BINDIR)/gpushare
	ln -sf gpushare $(DESTDIR)$(BINDIR)/kubectl-gpushare
	@echo "installed $(DESTDIR)$(BINDIR)/gpushare and $(DESTDIR)$(BINDIR)/kubectl-gpushare; try: kubectl gpushare status"

# ---- The Helm chart -------------------------------------------------------------------------
# `make chart-test` builds Helm from its Go module (tests/tools/helm pins the release; Go's
# caches stay in their default places), lints and renders charts/gpushare, and runs tests/chart.rs:
# the chart's default render must equal `kubectl kustomize manifests/`.
HELM_MODULE := tests/tools/helm
HELM := target/tools/helm
# Go from the PATH, else where the Go tarball installs it.
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
# The oldest Kubernetes release the chart and manifests support (docs/operator-guide.md, "Kubernetes versions").
MIN_KUBE_VERSION := 1.30.0
CHART_ALL_ON := certManager.enabled=true,namespace.create=true,grafanaDashboard.enabled=true,statusPage.enabled=true,serviceMonitor.enabled=true

.PHONY: chart-test helm

helm: $(HELM)

# The same -X flags as Helm's own Makefile, so `helm version` and the default Kubernetes version of
# `helm template` and `helm lint` are those of the release, not v1.20.
$(HELM): $(HELM_MODULE)/go.mod $(HELM_MODULE)/go.sum
	@mkdir -p $(dir $(HELM))
	cd $(HELM_MODULE) && \
	  version=$$($(GO) list -m -f '{{.Version}}' helm.sh/helm/v3) && \
	  k8s_minor=$$($(GO) list -m -f '{{.Version}}' k8s.io/client-go | cut -d. -f2) && \
	  $(GO) build -ldflags "-X helm.sh/helm/v3/internal/version.version=$$version \
	    -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$$k8s_minor \
	    -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$$k8s_minor" \
	    -o $(abspath $(HELM)) helm.sh/helm/v3/cmd/helm
	$(HELM) version --short

chart-test: $(HELM)
	$(HELM) lint --strict charts/gpushare
	$(HELM) lint --strict charts/gpushare --kube-version $(MIN_KUBE_VERSION) --set $(CHART_ALL_ON)
	$(HELM) template gpushare charts/gpushare -n gpushare-system --kube-version $(MIN_KUBE_VERSION) --set $(CHART_ALL_ON) > /dev/null
	HELM=$(abspath $(HELM)) $(CARGO) test --locked --test chart
