# heartbeat — common tasks. `make test` is what CI runs.
GO       ?= go
FUZZTIME ?= 15s

.PHONY: run broker test fuzz bench vet tidy

run: ## the whole pipeline in one process (in-process Kafka, local PostgreSQL)
	$(GO) run .

broker: ## only the in-process Kafka broker, on BROKER_ADDR (default 127.0.0.1:19092)
	$(GO) run . broker

test: vet ## every test, with the race detector; needs PostgreSQL (and prometheus/promtool for the dashboard tests)
	$(GO) test -race -count=1 -timeout 12m ./...

vet:
	$(GO) vet ./...

fuzz: ## each fuzz target for FUZZTIME
	@for target in $$($(GO) test -list '^Fuzz' ./messages/ | grep '^Fuzz'); do \
		echo "fuzzing $$target for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME) ./messages/ || exit 1; \
	done

bench: ## Go micro-benchmarks of the hot paths
	$(GO) test -run '^$$' -bench . -benchmem ./...

tidy:
	$(GO) mod tidy

CHAOS_EVENTS ?= 200000
CHAOS_SEEDS ?= 5
.PHONY: chaos
chaos: ## crash, rebalance, outage, broker-restart, shutdown and CHAOS_SEEDS random kill schedules against the built binary; CI runs CHAOS_EVENTS=20000 CHAOS_SEEDS=2
	CHAOS_EVENTS=$(CHAOS_EVENTS) CHAOS_SEEDS=$(CHAOS_SEEDS) $(GO) test -tags chaos -run '^TestChaos$$' -count=1 -v -timeout 90m .
