#!/bin/sh
# Set up everything (scripts/setup.sh), then run the server: `rpistream serve`
# with /etc/rpistream/config.toml if it exists, else one test-pattern camera
# (1280x720, 30 fps, H.264) on port 8080. Extra arguments go to `rpistream serve`.
set -eu
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/rpistream serve "$@"
