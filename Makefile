# kolach: one entry point for what CI runs (`make test`) and for the demo.
#
#   make deps       install missing Debian packages, cargo tools and the EC2 emulator (moto)
#   make test       fmt check, clippy -D warnings, build, unit + multi-host tests
#   make demo       etcd + 3 host namespaces running both daemons, status, ping matrix
#   make demo-down  stop the demo and remove its namespaces
#   make deb        release build, then kolach_<version>_<arch>.deb in target/deb, checked by lintian
#   make bench      release build, then udp/udp-busy/udp-1queue/vxlan/host-gw/underlay side by side
#   make fuzz       the fuzz targets in fuzz/ (cargo fuzz), FUZZ_SECONDS each; not in CI
#
# The multi-host tests and the demo create network namespaces: run as root.

SHELL := /bin/bash
CARGO ?= cargo
DEMO_DIR ?= .demo
DEMO_HOSTS ?= 3
DEMO_BACKEND ?= udp
# KOLACH_ variables for every demo host's kolach-dataplaned, e.g. KOLACH_QUEUES=auto
DEMO_DATAPLANED_ENV ?=
# Two test processes at a time: each multi-host test runs etcd and up to six
# daemons, and the machines this runs on have two cores.
TEST_THREADS ?= 2
BIN := target/debug
# Slow-to-make things the tests use, kept across runs: the venv holding moto
# (the EC2 emulator of the aws-vpc tests). tests/kit finds it as
# <target dir>/cache/moto-venv, or at KOLACH_MOTO_VENV.
CACHE_DIR ?= $(or $(CARGO_TARGET_DIR),target)/cache
MOTO_VENV := $(CACHE_DIR)/moto-venv
PYTHON ?= python3
# The Debian tree the package tests boot with systemd-nspawn: bookworm
# minbase plus these (tests/kit/src/nspawn/mod.rs PACKAGES says the same);
# the stamp next to it names them, so a changed list makes it anew.
NSPAWN_TREE := $(CACHE_DIR)/bookworm-minbase
NSPAWN_PACKAGES := systemd,systemd-sysv,dbus,iproute2,iputils-ping,procps,nftables,iptables
DEBIAN_MIRROR ?= http://deb.debian.org/debian
DEB_DIR ?= $(or $(CARGO_TARGET_DIR),target)/deb
RELEASE_BIN := $(or $(CARGO_TARGET_DIR),target)/release

# gcc/libc6-dev build ring (etcd TLS); openssl makes the test CA of the TLS tests;
# nftables cuts a host off from etcd (fault_partition); systemd (systemd-analyze),
# man-db and strace check the units (systemd_units); ethtool turns UDP
# segmentation offload off on a host's veth so tcpdump sees the wire (fast_path).
# libprotobuf-dev holds the well-known types (google/protobuf/*.proto) that
# etcd-client's build compiles; protobuf-compiler only recommends it.
# podman, runc, containernetworking-plugins (/usr/lib/cni) and busybox-static
# (the image) run containers on CNI networks in the hosts (tests/kit podman;
# none of podman's recommends is needed: no crun, uidmap, fuse-overlayfs, catatonit).
# bird2 (BIRD 2: bird, birdc) reads the export table and speaks BGP (pods bird).
# python3-venv and python3-pip make the venv holding moto (deps-moto).
# dpkg-dev (dpkg-shlibdeps), binutils (strip) and lintian build and check the
# package (make deb); debootstrap makes the Debian tree that systemd-container's
# systemd-nspawn boots to run it under a real systemd (operations packaged).
DEB_PACKAGES := etcd-server etcd-client protobuf-compiler libprotobuf-dev iproute2 iputils-ping \
	iperf3 tcpdump procps util-linux coreutils gcc libc6-dev openssl \
	nftables iptables systemd man-db strace ethtool \
	podman runc containernetworking-plugins busybox-static bird2 docker.io \
	python3 python3-venv python3-pip \
	prometheus curl \
	dpkg-dev binutils lintian debootstrap systemd-container
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: all deps deps-apt deps-rust deps-moto deps-nspawn deb build fmt-check clippy sweep test unit demo demo-down bench fuzz

all: build

deps: deps-apt deps-rust deps-moto deps-nspawn

deps-apt:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
		dpkg -s "$$p" 2>/dev/null | grep -q '^Status: install ok installed' || missing="$$missing $$p"; \
	done; \
	for c in etcd etcdctl protoc ip bridge ping cc openssl nft iptables systemd-analyze strace ethtool podman runc busybox bird birdc dockerd docker; do \
		command -v "$$c" >/dev/null 2>&1 || missing="$$missing (no $$c)"; \
	done; \
	[ -f /usr/include/google/protobuf/descriptor.proto ] || missing="$$missing (no descriptor.proto)"; \
	[ -x /usr/lib/cni/ptp ] || missing="$$missing (no /usr/lib/cni/ptp)"; \
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

# moto[server,ec2] from PyPI in a venv of its own (the aws-vpc tests' EC2
# emulator, with boto3 for seeding it); skipped when it is there.
deps-moto: deps-apt
	@if [ -x $(MOTO_VENV)/bin/moto_server ] && $(MOTO_VENV)/bin/python -c 'import moto, boto3' 2>/dev/null; then \
		echo "deps: moto present in $(MOTO_VENV)"; \
	else \
		echo "deps: installing moto[server,ec2] into $(MOTO_VENV)"; \
		mkdir -p $(CACHE_DIR) && rm -rf $(MOTO_VENV) && \
		$(PYTHON) -m venv $(MOTO_VENV) && \
		$(MOTO_VENV)/bin/pip install -q 'moto[server,ec2]'; \
	fi

# debootstrap into a temporary dir, moved into place when complete.
deps-nspawn: deps-apt
	@if [ "$$(cat $(NSPAWN_TREE).stamp 2>/dev/null)" = "bookworm $(NSPAWN_PACKAGES)" ] && \
		[ -x $(NSPAWN_TREE)/lib/systemd/systemd ]; then \
		echo "deps: Debian tree present in $(NSPAWN_TREE)"; \
	else \
		echo "deps: debootstrap bookworm into $(NSPAWN_TREE) (about a minute)"; \
		mkdir -p $(CACHE_DIR) && rm -rf $(NSPAWN_TREE) $(NSPAWN_TREE).tmp $(NSPAWN_TREE).stamp && \
		$(SUDO) debootstrap --variant=minbase --include=$(NSPAWN_PACKAGES) \
			bookworm $(NSPAWN_TREE).tmp $(DEBIAN_MIRROR) >$(CACHE_DIR)/debootstrap.log 2>&1 || \
			{ tail -20 $(CACHE_DIR)/debootstrap.log; exit 1; }; \
		mv $(NSPAWN_TREE).tmp $(NSPAWN_TREE) && echo "bookworm $(NSPAWN_PACKAGES)" >$(NSPAWN_TREE).stamp; \
	fi

build:
	$(CARGO) build --workspace

deb: deps-apt
	$(CARGO) build --release -p kolach-controld -p kolach-dataplaned -p kolachctl -p kolach-cni -p kolach-docgen
	packaging/deb/build --bins $(RELEASE_BIN) --docgen $(RELEASE_BIN)/kolach-docgen --out $(DEB_DIR)
	lintian --fail-on error $(DEB_DIR)/kolach_*.deb

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

demo: deps-apt deps-rust build
	$(BIN)/kolach-lab --dir $(DEMO_DIR) up --hosts $(DEMO_HOSTS) --backend $(DEMO_BACKEND) \
		$(foreach e,$(DEMO_DATAPLANED_ENV),--dataplaned-env $(e))
	@echo; echo '$$ kolachctl --run-dir $(DEMO_DIR)/host1 status'
	@$(BIN)/kolachctl --run-dir $(DEMO_DIR)/host1 status
	@echo; echo '$$ kolachctl --run-dir $(DEMO_DIR)/host1 leases'
	@$(BIN)/kolachctl --run-dir $(DEMO_DIR)/host1 leases
	@echo; echo 'pod-to-pod ping matrix (3 pings each, average RTT):'
	@$(BIN)/kolach-lab --dir $(DEMO_DIR) ping-matrix
	@echo; echo 'restart a daemon as systemd would: $(BIN)/kolach-lab --dir $(DEMO_DIR) restart 1 dataplaned'
	@echo 'upgrade a dataplane in place:      $(BIN)/kolachctl --run-dir $(DEMO_DIR)/host1 dataplane upgrade'
	@echo 'stop it with: make demo-down'

demo-down:
	@if [ -x $(BIN)/kolach-lab ]; then \
		$(BIN)/kolach-lab --dir $(DEMO_DIR) down; \
	else \
		$(CARGO) run -q -p kolach-tests --bin kolach-lab -- --dir $(DEMO_DIR) down; \
	fi

# DESIGN §9: one lab per mode, rounds interleaved, medians; a table on stdout
# and JSON in $(BENCH_OUT) (bench/README.md; BENCH_MODES, BENCH_ROUNDS,
# BENCH_SECONDS, ... override the defaults, which take about 13 minutes).
BENCH_OUT ?= bench/results.json
bench: deps-apt
	$(CARGO) build --release --workspace
	target/release/kolach-lab sweep
	KOLACH_BIN_DIR=$(CURDIR)/target/release BENCH_OUT=$(BENCH_OUT) target/release/kolach-bench

# Fuzz targets (fuzz/, its own workspace): udp packet checks, TSO segmentation,
# coalescing (fuzz/, over kolach-packet alone); the config parser, lease values
# and keys, snapshots, pool and block values, the allocation journal, the CNI
# plugin's config and environment, EC2 answers (fuzz/daemons/, over the daemons and the plugin). cargo fuzz needs a
# nightly toolchain for its sanitizers; without one the targets run on stable
# with `-s none` (coverage-guided, no AddressSanitizer). New inputs go to
# <dir>/corpus/<target>, the committed seeds are in <dir>/seeds/<target>, <dir>
# being fuzz or fuzz/daemons.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= config lease packet snapshot segment coalesce pool block journal cni_config ec2_xml
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install --locked cargo-fuzz
	@if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then tc=+nightly; san=; \
	else echo "fuzz: no nightly toolchain: running on stable without a sanitizer (-s none)"; tc=; san="-s none"; fi; \
	mkdir -p target; cd fuzz && for t in $(FUZZ_TARGETS); do \
		case $$t in config|lease|snapshot|pool|block|journal|cni_config|ec2_xml) d=daemons;; *) d=.;; esac; \
		mkdir -p $$d/corpus/$$t; \
		echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
		cargo $$tc fuzz run --fuzz-dir $$d $$san $$t $$d/corpus/$$t $$d/seeds/$$t -- -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
			2>&1 | tee ../target/fuzz-$$t.log | grep -E '^(#[0-9]+ +DONE|Done|stat::number_of_executed_units|stat::new_units_added|==[0-9]+==|SUMMARY|thread)' ; \
		test $${PIPESTATUS[0]} -eq 0 || { echo "fuzz $$t FAILED (full log: target/fuzz-$$t.log)"; exit 1; }; \
	done
