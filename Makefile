# Two entry points for newcomers: `make run` (daemon on the embedded default) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install run test bench clean

$(BIN)/twistd: setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	@touch $@

install: $(BIN)/twistd

run: install
	$(BIN)/twistd -n btu --embedded

test: install
	$(BIN)/python -m twisted.trial --jobs=2 tests

clean:
	rm -rf $(VENV) _trial_temp build *.egg-info
