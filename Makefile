# profile-enrichment: every entry point a user needs, each of which sets itself up first.
#   make demo   generate data and run the pipeline on embedded defaults (local Spark, ./lake)
#   make test   lint and run the whole test suite
# Both depend on `make setup`, so either works alone on a fresh machine.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
JARS   := .jars
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup check-tools demo test lint docs bench bench-datagen bench-features aep-sandbox clean distclean

setup: check-tools $(VENV)/.installed $(JARS)/.fetched

check-tools:
	@command -v $(PYTHON) >/dev/null || { echo "setup: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11'"; exit 1; }
	@command -v java >/dev/null || { echo "setup: 'java' not found; Spark 4.2 needs Java 17 or 21 (e.g. apt-get install openjdk-17-jdk-headless)"; exit 1; }
	@java -version 2>&1 | head -1 | grep -Eq '"(17|21)[."]' || { echo "setup: Spark 4.2 needs Java 17 or 21, found: $$(java -version 2>&1 | head -1)"; exit 1; }
	@command -v mvn >/dev/null || { echo "setup: 'mvn' not found; it fetches the Delta jars (e.g. apt-get install maven)"; exit 1; }

# Re-installed only when the pins change.
$(VENV)/.installed: setup.py lib/enrich/_versions.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

# Re-fetched only when the Delta version changes.
$(JARS)/.fetched: lib/enrich/_versions.py tools/fetch_jars.py | $(VENV)/.installed
	$(PY) tools/fetch_jars.py $(JARS)
	@touch $@

# Features for three month starts; models fit on the first two and are validated on the last.
DEMO_DATES  ?= [2025-10-01, 2025-11-01, 2025-12-01]
DEMO_MODELS ?= conversion churn clv affinity segments

# Scored the day after the generated data ends: its features do not exist yet, so scoring builds them.
# The drift guard fires there (days_since_first_event: the sample data all starts on 2025-01-01, so
# it shifts by a month, PSI ~0.9); the demo shows the refusal in score's summary, then overrides it.
DEMO_SCORE_DATE ?= 2026-01-01

demo: setup
	$(PY) jobs/generate_data.py
	$(PY) jobs/build_features.py --set 'features.as_of_dates=$(DEMO_DATES)'
	$(PY) jobs/train.py --set 'training.as_of_dates=$(DEMO_DATES)' $(foreach m,$(DEMO_MODELS),--model conf/models/$(m).yaml)
	$(PY) jobs/score.py --set as_of=$(DEMO_SCORE_DATE)
	$(PY) jobs/publish.py --set as_of=$(DEMO_SCORE_DATE) --allow-drift

# A loopback stand-in for Adobe Experience Platform (README: "Try it without a platform"). It serves
# the demo's raw events as dataset `platform-events` for export_dataset, and takes ingestion into `insights`.
AEP_SANDBOX_PORT ?= 8765
aep-sandbox: setup
	$(PY) -m enrich.aep.sandbox --port $(AEP_SANDBOX_PORT) --dataset-id insights \
		$(if $(wildcard lake/raw/events/_delta_log),--dataset-from platform-events=lake/raw/events)

lint: setup
	$(VENV)/bin/ruff check lib jobs tests tools bench

test: setup lint
	$(VENV)/bin/pytest

docs: setup
	$(PY) tools/config_table.py README.md

bench: bench-datagen bench-features

bench-datagen: setup
	$(PY) bench/datagen.py

bench-features: setup
	$(PY) bench/features.py

clean:
	rm -rf lake outbox mlruns mlartifacts mlflow.db spark-warehouse metastore_db derby.log build dist .pytest_cache .ruff_cache .hypothesis

distclean: clean
	rm -rf $(VENV) $(JARS)
