# The two set-up commands of the README. Both install what they need first.
SANDBOX ?= demo
PROXIMITY = .venv/bin/proximity

.PHONY: bootstrap demo demo-clean test bench

bootstrap:
	@scripts/bootstrap.sh

demo: bootstrap
	@$(PROXIMITY) sandbox destroy $(SANDBOX) >/dev/null
	$(PROXIMITY) sandbox create $(SANDBOX)
	$(PROXIMITY) up --sandbox $(SANDBOX)
	$(PROXIMITY) sandbox attach $(SANDBOX) nginx-01
	$(PROXIMITY) sandbox attach $(SANDBOX) wordpress-02
	$(PROXIMITY) status --sandbox $(SANDBOX)
	$(PROXIMITY) leases --sandbox $(SANDBOX)
	$(PROXIMITY) sandbox exec $(SANDBOX) wordpress-02 -- busybox nslookup nginx-01.prox.local
	@echo "The sandbox $(SANDBOX) stays up to explore (see the README); remove it with: make demo-clean"

demo-clean: bootstrap
	$(PROXIMITY) sandbox destroy $(SANDBOX)

test: bootstrap
	.venv/bin/pytest -q -p no:cacheprovider

bench: bootstrap
	.venv/bin/python bench/run.py
