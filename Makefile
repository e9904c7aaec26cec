# gpushare developer tasks. `make run` and `make test` are the two set-up commands.
CARGO ?= cargo
BIN := target/debug/gpushare
KUBECTL ?= kubectl

.PHONY: build run test lint fmt certs check-examples deploy undeploy bench clean cluster cluster-down e2e controlplane

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
# and their CA injected as the webhook's caBundle.
deploy: build
	@tmp=$$(mktemp -d); \
	$(BIN) certs --out $$tmp > $$tmp/ca-bundle; \
	$(KUBECTL) apply -k manifests/; \
	$(KUBECTL) -n gpushare-system create secret tls gpushare-tls --cert=$$tmp/tls.crt --key=$$tmp/tls.key \
	  --dry-run=client -o yaml | $(KUBECTL) apply -f -; \
	bundle=$$(cat $$tmp/ca-bundle); \
	for i in 0 1; do $(KUBECTL) patch mutatingwebhookconfiguration gpushare --type=json \
	  -p "[{\"op\":\"add\",\"path\":\"/webhooks/$$i/clientConfig/caBundle\",\"value\":\"$$bundle\"}]"; done; \
	rm -rf $$tmp

undeploy:
	$(KUBECTL) delete -k manifests/ --ignore-not-found

# Load benchmark of the release binary against a bare axum+rustls ceiling (server on core 0, load
# generator on core 1); prints a table and writes target/bench-results.md. Knobs: BENCH_SECONDS,
# BENCH_WARMUP_SECONDS, BENCH_REQUESTS, BENCH_LEVELS, BENCH_INFO_LOG=0; soak: BENCH_SOAK_SECONDS=300
# BENCH_RATE=<req/s> (see BENCHMARKS.md).
bench:
	$(CARGO) bench --locked --bench admission

# A real control plane on loopback (CONTRACT section 6b): etcd, kube-apiserver and
# kube-controller-manager of the release pinned in tests/tools/controlplane/go.mod, built with
# `go build` (the first time 15-30 minutes, then from Go's build cache), with gpushare deployed from
# manifests/ and `gpushare serve` running locally in cluster mode. Idempotent.
cluster: build
	@GPUSHARE=$(CURDIR)/$(BIN) bash tests/e2e/cluster.sh up

cluster-down:
	@bash tests/e2e/cluster.sh down

controlplane:
	@bash tests/e2e/cluster.sh build

# The end-to-end suite against `make cluster` (started when needed), through the real kubectl and
# kube-apiserver. Tests run one at a time: some change the cluster-wide policy or stop components.
e2e: cluster
	$(CARGO) test --locked --features e2e --test e2e -- --test-threads=1

clean:
	$(CARGO) clean
