#!/usr/bin/env bash
# The whole test suite on a fresh machine: set up, then lint, typecheck, build and test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npm test
