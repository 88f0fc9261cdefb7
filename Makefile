# The two commands of the README: `make demo` and `make test`. Both set up what is missing.
.PHONY: setup demo test lint

setup:
	bash scripts/setup.sh

# `make demo LAB=NAME` runs the demo on lab NAME instead of the default one.
demo: setup
	.venv/bin/python -m topo.demo $(if $(LAB),--name $(LAB))

test: setup
	bash scripts/test.sh

lint: setup
	.venv/bin/ruff check .
	.venv/bin/mypy
