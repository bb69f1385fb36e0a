# profile-enrichment: every entry point a user needs, each of which sets itself up first.
#   make demo   generate data and run the pipeline on embedded defaults (local Spark, ./lake)
#   make test   lint and run the whole test suite
# Both depend on `make setup`, so either works alone on a fresh machine.

PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
JARS   := .jars
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup check-tools demo test lint docs bench bench-datagen bench-features bench-btyd aep-sandbox cluster-up cluster-down mlflow-server \
	clean distclean

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
	$(PY) -m pip install --quiet -e '.[spark,test]'
	@touch $@

# Re-fetched only when the Delta version changes.
$(JARS)/.fetched: lib/enrich/_versions.py tools/fetch_jars.py | $(VENV)/.installed
	$(PY) tools/fetch_jars.py $(JARS)
	@touch $@

# Features for three month starts; models fit on the first two and are validated on the last.
DEMO_DATES  ?= [2025-10-01, 2025-11-01, 2025-12-01]
DEMO_MODELS ?= conversion churn clv clv_btyd affinity segments

# Scored the day after the generated data ends: its features do not exist yet, so scoring builds them.
# The drift guard fires there (days_since_first_event: the sample data all starts on 2025-01-01, so
# it shifts by a month, PSI ~0.9); the demo shows the refusal in score's summary, then overrides it.
DEMO_SCORE_DATE ?= 2026-01-01

demo: setup
	$(PY) jobs/pipeline.py --set 'pipeline.stages=[generate, features, train, score, publish]' \
		--set 'features.as_of_dates=$(DEMO_DATES)' --set 'training.as_of_dates=$(DEMO_DATES)' \
		--set as_of=$(DEMO_SCORE_DATE) $(foreach m,$(DEMO_MODELS),--model conf/models/$(m).yaml) --allow-drift

# A loopback stand-in for Adobe Experience Platform (README: "Try it without a platform"). It serves
# the demo's raw events as dataset `platform-events` for export_dataset, and takes ingestion into `insights`.
AEP_SANDBOX_PORT ?= 8765
aep-sandbox: setup
	$(PY) -m enrich.aep.sandbox --port $(AEP_SANDBOX_PORT) --dataset-id insights \
		$(if $(wildcard lake/raw/events/_delta_log),--dataset-from platform-events=lake/raw/events)

# A Spark standalone master and two workers on 127.0.0.1 (README: "Run on a cluster"); the master URL
# is printed and kept in .cluster/cluster.json. cluster-down stops them by process id.
CLUSTER_WORKERS ?= 2
cluster-up: setup
	$(PY) tools/cluster.py up --workers $(CLUSTER_WORKERS)

# A local MLflow tracking server (sqlite store, artifacts served from a folder) for cluster runs.
MLFLOW_PORT ?= 5000
mlflow-server: setup
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(VENV)/bin/mlflow server --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1 \
		--backend-store-uri sqlite:///mlflow-server.db --artifacts-destination ./mlflow-server-artifacts

cluster-down:
	@test -x $(PY) || { echo "cluster: not running"; exit 0; }; $(PY) tools/cluster.py down

lint: setup
	$(VENV)/bin/ruff check lib jobs tests tools bench

test: setup lint
	$(VENV)/bin/pytest

docs: setup
	$(PY) tools/config_table.py README.md

bench: bench-datagen bench-features bench-btyd

bench-datagen: setup
	$(PY) bench/datagen.py

bench-features: setup
	$(PY) bench/features.py

bench-btyd: setup
	$(PY) bench/btyd.py

clean: cluster-down
	rm -rf .cluster mlflow-server.db mlflow-server-artifacts lake outbox mlruns mlartifacts mlflow.db spark-warehouse metastore_db derby.log build dist .pytest_cache .ruff_cache .hypothesis

distclean: clean
	rm -rf $(VENV) $(JARS)
