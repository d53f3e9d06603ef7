#!/usr/bin/env bash
# Runs every test of the router: unit tests, end-to-end tests against the
# real binary (including the status page in headless Chromium), with the
# race detector. Installs what the tests need when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
	echo "test/run.sh: installing chromium for the status page test"
	sudo=""
	[ "$(id -u)" -ne 0 ] && sudo="sudo"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >/dev/null
fi

export ROUTER_REQUIRE_BROWSER=1
go test -race -count=1 ./...
