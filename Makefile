# The README's two commands are `make demo` and `make test`; both set up .venv first.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup setup-edge demo lint test bench wheelhouse clean-venv

# the environment is exactly requirements-lock.txt (what the tests and a hospital's wheelhouse run)
$(VENV)/.installed: pyproject.toml requirements-lock.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -c requirements-lock.txt -e ".[test]"
	touch $@

setup: $(VENV)/.installed

# The device runtime's own small environment (tflite-runtime 2.14 needs numpy<2), and the
# int8 TFLite converter's (litert-torch pulls numpy 2, jax): neither sits beside the training stack.
.venv-edge/.installed:
	$(PY) -m venv .venv-edge
	.venv-edge/bin/pip install -q "numpy<2" tflite-runtime==2.14.0
	touch $@

.venv-export/.installed:
	$(PY) -m venv .venv-export
	.venv-export/bin/pip install -q torch==2.13.0 litert-torch==0.10.0 tflite-micro
	touch $@

setup-edge: .venv-edge/.installed .venv-export/.installed

# The main job: a federated CLEF simulation on the built-in synthetic multi-site cohort.
demo: setup
	$(BIN)/clef simulate --config simulate-small --out runs/demo

# lint (pyflakes-level ruff rules, mypy not strict: pyproject.toml) runs first and fails the build
lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

test: setup setup-edge lint
	$(BIN)/python -m pytest -q

bench: setup
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# An offline install for a hospital: every pinned dependency of requirements-lock.txt + clef-fl
# as wheels (docs/deployment.md); install inside with pip install --no-index --find-links wheelhouse clef-fl
wheelhouse: setup
	$(BIN)/clef wheelhouse --out wheelhouse

clean-venv:
	rm -rf $(VENV) .venv-edge .venv-export
