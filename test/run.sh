#!/usr/bin/env bash
# Runs every test of the router: unit tests, end-to-end tests against the
# real binary, with the race detector. Installs nothing it does not need.
set -euo pipefail
cd "$(dirname "$0")/.."
go test -race -count=1 ./...
