# The two commands of the README. Both set up what they need first (Debian packages, .venv).
PY := .venv/bin/python

.PHONY: setup demo test bench clean

setup:
	@scripts/setup.sh

## demo: the simulated boards through the standard plan, signed and verified
demo: setup
	$(PY) scripts/demo.py

## test: the whole test suite
test: setup
	$(PY) -m pytest -q

## bench: the speed figures the issues ask for (not part of the test suite)
bench: setup
	@for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf .venv results *.egg-info
