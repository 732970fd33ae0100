# Two entry points: `make demo` (set up, then run the main job) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint bench cuda-check clean

$(BIN)/zoo: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,plot]'
	touch $(BIN)/zoo

demo: $(BIN)/zoo
	$(BIN)/zoo list
	$(BIN)/zoo export binary --force

test: $(BIN)/zoo
	$(BIN)/python -m pytest

lint: $(BIN)/zoo
	$(BIN)/ruff check .

bench: $(BIN)/zoo
	$(BIN)/python benchmarks/run.py

# On a machine with a GPU: every CUDA path (tests marked cuda, check/export/verify/bench --device cuda).
cuda-check: $(BIN)/zoo
	$(BIN)/python tests/cuda_check.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
