# The two set-up commands of the README. Both install what they need first.
SANDBOX ?= demo
PORT ?= 8080
PROXIMITY = .venv/bin/proximity

.PHONY: bootstrap demo demo-clean test test-fast bench install uninstall lock deb test-package

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	@$(PROXIMITY) sandbox destroy $(SANDBOX) --if-exists >/dev/null
	$(PROXIMITY) sandbox create $(SANDBOX)
	$(PROXIMITY) up --sandbox $(SANDBOX)
	$(PROXIMITY) ct create nginx-01 --sandbox $(SANDBOX)
	$(PROXIMITY) ct create wordpress-02 --sandbox $(SANDBOX)
	$(PROXIMITY) zone create lab --subnet 10.20.0.0/24 --sandbox $(SANDBOX)
	$(PROXIMITY) ct create api-01 --zone lab --sandbox $(SANDBOX)
	$(PROXIMITY) ct list --sandbox $(SANDBOX)
	$(PROXIMITY) zone list --sandbox $(SANDBOX)
	$(PROXIMITY) status --sandbox $(SANDBOX)
	@scripts/wait-leases.sh $(SANDBOX) 3
	$(PROXIMITY) leases --sandbox $(SANDBOX)
	$(PROXIMITY) ct exec wordpress-02 --sandbox $(SANDBOX) -- nslookup nginx-01.prox.local
	$(PROXIMITY) ct exec wordpress-02 --sandbox $(SANDBOX) -- wget -qO- http://nginx-01.prox.local
	@scripts/demo-zones.sh $(SANDBOX)
	@scripts/demo-serve.sh $(SANDBOX) $(PORT)
	@echo "The sandbox $(SANDBOX) and the service stay up to explore (see the README); remove them with: make demo-clean"

demo-clean: bootstrap
	$(PROXIMITY) sandbox destroy $(SANDBOX) --if-exists

# Three workers (pytest-xdist), a test module each at a time: most integration tests wait on DHCP,
# timers and daemons, so on 2 cores three overlap well. Module fixtures stay in one worker.
test:
	@scripts/bootstrap.sh --test
	.venv/bin/pytest -q -p no:cacheprovider -n 3 --dist loadfile

# Every test that makes no network namespace (no root needed): under a minute.
test-fast:
	@scripts/bootstrap.sh --test
	.venv/bin/pytest -q -p no:cacheprovider -n 2 -m "not root"

bench: bootstrap
	@command -v dnsperf >/dev/null && command -v iperf3 >/dev/null || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends dnsperf iperf3 >/dev/null
	.venv/bin/python bench/run.py $(if $(BENCH_QUICK),--quick)

# System-wide install on a Proxmox VE host (see "On a Proxmox VE host"); options: INSTALL_ARGS="--dry-run" etc.
install:
	scripts/install.sh $(INSTALL_ARGS)

uninstall:
	scripts/install.sh --uninstall $(INSTALL_ARGS)

# Re-make requirements.lock and requirements-test.lock; LOCK_ARGS=--upgrade moves every pin to the newest allowed.
lock:
	scripts/lock.sh $(LOCK_ARGS)

# Debian packages, one per release: dist/proximity_<version>~deb12_<arch>.deb (bookworm, Proxmox VE 8)
# and ~deb13 (trixie, Proxmox VE 9). DIST=bookworm or DIST=trixie builds one.
DIST ?= bookworm trixie
deb: bootstrap
	@command -v strip >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils >/dev/null
	@for dist in $(DIST); do PYTHON=.venv/bin/python packaging/build-deb.sh $$dist || exit 1; done

# Installs each package into a throwaway Debian root (mmdebstrap, cached in /var/cache/proximity-test),
# without network, and checks it with lintian. Not part of `make test`.
test-package: deb
	@command -v mmdebstrap >/dev/null && command -v lintian >/dev/null || \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap lintian >/dev/null
	DIST="$(DIST)" .venv/bin/pytest -q -p no:cacheprovider packaging/tests
