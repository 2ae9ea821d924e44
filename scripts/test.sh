#!/usr/bin/env bash
# The project's checks, as CI and the README's quick start run them: the test suite, then ruff.
# Arguments go to pytest, e.g. `bash scripts/test.sh tests/test_readme.py` or `bash scripts/test.sh -m slow`.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest -q "$@"
ruff check .
