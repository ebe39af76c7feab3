# Two commands for a fresh machine: `make report` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
SAMPLE := data/sample/messages.csv.gz
CONFIG := examples/analytics.toml
OUT    := out
REPORT_MONTH ?= 2026-10

.PHONY: install report lint test test-thorough benchmark sample clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,notebooks,spark]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

## The main job on the shipped sample: ingest, summarise, bill, price, and the HTML report of REPORT_MONTH,
## with the sample's config (CONFIG: its marketing max price), also in the report (examples/sample-report.toml).
## Prints where the results are.
report: $(STAMP)
	@mkdir -p $(OUT)
	$(BIN)/wa-analytics ingest $(SAMPLE) -o $(OUT)/messages.parquet --quarantine $(OUT)/quarantine.csv
	$(BIN)/wa-analytics summary $(OUT)/messages.parquet
	$(BIN)/wa-analytics charges $(OUT)/messages.parquet -o $(OUT)/charges.csv
	$(BIN)/wa-analytics costs $(OUT)/messages.parquet --config $(CONFIG) -o $(OUT)/costs.csv --invoice $(OUT)/invoice.csv
	$(BIN)/wa-analytics report --input $(SAMPLE) --month $(REPORT_MONTH) --params examples/sample-report.toml -o $(OUT)/report.html
	@echo "Results: $(OUT)/messages.parquet (canonical messages), $(OUT)/quarantine.csv (rows set aside), $(OUT)/charges.csv (charges), $(OUT)/costs.csv and $(OUT)/invoice.csv (costs)"
	@echo "Report: $(CURDIR)/$(OUT)/report.html"

## Ruff: lint, and the code formatted as `ruff format` writes it (run `.venv/bin/ruff format .` to fix).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## Lint, then the whole default suite.
test: lint
	$(BIN)/python -m pytest -q

## The property test with 20,000 random traffics instead of 2,000 (about ten times as long), and the
## ingest fuzz test with 2,000 random inputs of each kind instead of 25 (200 through the command).
test-thorough: $(STAMP)
	WA_ANALYTICS_PROPERTY_EXAMPLES=20000 $(BIN)/python -m pytest -q tests/test_engine_properties.py
	WA_ANALYTICS_FUZZ_EXAMPLES=2000 $(BIN)/python -m pytest -q tests/test_ingest_properties.py

## Regenerate the shipped sample (deterministic for the seed).
sample: $(STAMP)
	$(BIN)/wa-analytics generate --users 2500 --start 2026-01-01 --months 11 --seed 7 --with-defects -o $(SAMPLE)

## Engine speed and memory at 1 M and 10 M messages (see benchmarks/README.md; 100 M: SIZES=100M).
SIZES ?= 1M,10M
benchmark: $(STAMP)
	$(BIN)/python benchmarks/engine.py --sizes $(SIZES)

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .hypothesis
