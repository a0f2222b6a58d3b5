#!/bin/sh
# Set up everything (scripts/setup.sh --test), then run the whole test suite.
# Every test of a hot path runs against both the compiled extension and its
# pure-Python twin. Extra arguments go to pytest.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh --test
exec .venv/bin/python -m pytest "$@"
