# Two commands for a fresh machine: `make report` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
SAMPLE := data/sample/messages.csv.gz
OUT    := out

.PHONY: install report test test-slow benchmark sample clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,notebooks]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

## The main job on the shipped sample: ingest, bill, summarise. Prints where the result is.
report: $(STAMP)
	@mkdir -p $(OUT)
	$(BIN)/wa-analytics ingest $(SAMPLE) -o $(OUT)/messages.parquet --quarantine $(OUT)/quarantine.csv
	$(BIN)/wa-analytics summary $(OUT)/messages.parquet
	@echo "Canonical messages: $(OUT)/messages.parquet (quarantined rows: $(OUT)/quarantine.csv)"

## The whole default suite (long runs are marked `slow` and left to `make test-slow`).
test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

## Regenerate the shipped sample (deterministic for the seed).
sample: $(STAMP)
	$(BIN)/wa-analytics generate --users 2500 --start 2026-01-01 --months 11 --seed 7 -o $(SAMPLE)

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .hypothesis
