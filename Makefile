# The two commands of the README: `make demo` (set up + main job) and `make test` (set up + tests).
PY := .venv/bin/python

.PHONY: setup demo test clean-data
setup:
	@bash scripts/setup_venv.sh

demo: setup
	.venv/bin/mrirecon demo $(DEMO_ARGS)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean-data:
	rm -rf data/synthetic outputs
