# The two commands of the README: `make run` and `make test`. Nothing else needs installing by hand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8080
export DUI_DATABASE_URL ?= sqlite:///var/dui.sqlite

.PHONY: run test venv lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python 3.11 or newer is required") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/dui db upgrade
	$(BIN)/dui demo load
	@echo
	@echo "DUI backend on http://$(HOST):$(PORT)  (FHIR R4 at /fhir; stop with Ctrl-C)"
	@echo "  curl -s http://$(HOST):$(PORT)/fhir/metadata | head -c 300"
	@echo "  curl -s 'http://$(HOST):$(PORT)/fhir/Patient?name=helene'"
	@echo "INSi: the local INSi simulator answers (fictitious identities: ins/insi/table.py; README, 'Try it')."
	@echo "Demo accounts (EHPAD Les Tilleuls): demo.medecin, demo.infirmier, demo.aide-soignant, demo.administratif,"
	@echo "  demo.direction; password Demo-Tilleuls-2026. A nurse's token, then her residents only:"
	@echo "  TOKEN=\$$(curl -s http://$(HOST):$(PORT)/auth/token -d grant_type=password -d username=demo.infirmier \\"
	@echo "    -d password=Demo-Tilleuls-2026 | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')"
	@echo "  curl -s -H \"Authorization: Bearer \$$TOKEN\" 'http://$(HOST):$(PORT)/fhir/Patient?_summary=count'"
	@echo "In dev, requests without a token are still served, as anonymous (README, 'Get a token')."
	@echo "The staff API (a staff token, e.g. demo.infirmier's): http://$(HOST):$(PORT)/api/docs (README, 'The staff API')."
	@echo
	$(BIN)/dui serve --host $(HOST) --port $(PORT)

test: $(STAMP)
	@scripts/ensure-test-servers
	PYTHON=$(BIN)/python scripts/run-tests $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/pip install --quiet ruff mypy
	$(BIN)/ruff check dui ins mssante fhir_profiles tests scripts
	$(BIN)/mypy

clean:
	rm -rf $(VENV) var .pytest_cache
