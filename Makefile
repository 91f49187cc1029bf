# kolach: one entry point for what CI runs (`make test`) and for the demo.
#
#   make deps       install missing Debian packages and cargo tools
#   make test       fmt check, clippy -D warnings, build, unit + multi-host tests
#   make demo       etcd + 3 host namespaces running both daemons, status, ping matrix
#   make demo-down  stop the demo and remove its namespaces
#   make bench      release build, then udp/vxlan/host-gw/underlay measured side by side
#
# The multi-host tests and the demo create network namespaces: run as root.

SHELL := /bin/bash
CARGO ?= cargo
DEMO_DIR ?= .demo
DEMO_HOSTS ?= 3
DEMO_BACKEND ?= udp
# Two test processes at a time: each multi-host test runs etcd and up to six
# daemons, and the machines this runs on have two cores.
TEST_THREADS ?= 2
BIN := target/debug

# gcc/libc6-dev build ring (etcd TLS); openssl makes the test CA of the TLS tests.
DEB_PACKAGES := etcd-server etcd-client protobuf-compiler iproute2 iputils-ping \
	iperf3 tcpdump procps util-linux coreutils gcc libc6-dev openssl
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: all deps deps-apt deps-rust build fmt-check clippy sweep test unit demo demo-down bench

all: build

deps: deps-apt deps-rust

deps-apt:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
		dpkg -s "$$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing="$$missing $$p"; \
	done; \
	for c in etcd etcdctl protoc ip bridge ping cc openssl; do \
		command -v "$$c" >/dev/null 2>&1 || missing="$$missing (no $$c)"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "deps: installing:$$missing"; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $(DEB_PACKAGES); \
	else \
		echo "deps: Debian packages present"; \
	fi

deps-rust:
	@if command -v rustup >/dev/null 2>&1; then \
		for c in rustfmt clippy; do \
			rustup component list --installed 2>/dev/null | grep -q "^$$c" || rustup component add "$$c"; \
		done; \
	fi
	@$(CARGO) nextest --version >/dev/null 2>&1 || $(CARGO) install cargo-nextest --locked

build:
	$(CARGO) build --workspace

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# Namespaces and temp dirs of test runs that died (kt<pid>-*, pid gone).
sweep: build
	$(BIN)/kolach-lab sweep

unit:
	$(CARGO) nextest run --workspace --lib --bins

test: deps fmt-check clippy build sweep
	$(CARGO) nextest run --workspace --no-fail-fast --test-threads $(TEST_THREADS) --config-file tests/nextest.toml

demo: deps build
	$(BIN)/kolach-lab --dir $(DEMO_DIR) up --hosts $(DEMO_HOSTS) --backend $(DEMO_BACKEND)
	@echo; echo '$$ kolachctl --run-dir $(DEMO_DIR)/host1 status'
	@$(BIN)/kolachctl --run-dir $(DEMO_DIR)/host1 status
	@echo; echo '$$ kolachctl --run-dir $(DEMO_DIR)/host1 leases'
	@$(BIN)/kolachctl --run-dir $(DEMO_DIR)/host1 leases
	@echo; echo 'pod-to-pod ping matrix (3 pings each, average RTT):'
	@$(BIN)/kolach-lab --dir $(DEMO_DIR) ping-matrix
	@echo; echo 'stop it with: make demo-down'

demo-down:
	@if [ -x $(BIN)/kolach-lab ]; then \
		$(BIN)/kolach-lab --dir $(DEMO_DIR) down; \
	else \
		$(CARGO) run -q -p kolach-tests --bin kolach-lab -- --dir $(DEMO_DIR) down; \
	fi

# DESIGN §9: one lab per mode, rounds interleaved, medians; a table on stdout
# and JSON in $(BENCH_OUT) (bench/README.md; BENCH_ROUNDS, BENCH_SECONDS, ...
# override the defaults, which take about 7 minutes).
BENCH_OUT ?= bench/results.json
bench: deps-apt
	$(CARGO) build --release --workspace
	target/release/kolach-lab sweep
	KOLACH_BIN_DIR=$(CURDIR)/target/release BENCH_OUT=$(BENCH_OUT) target/release/kolach-bench
