#!/usr/bin/env bash
# Runs every test of the router: unit tests, end-to-end tests against the
# real binary (the status page in headless Chromium, consistency against a
# real Postgres primary and standby, a real Django admin site and a real
# Rails app on both),
# fuzz targets briefly, and the soak test, with the race detector. Installs what the tests need when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the end-to-end tests use: Chromium renders the status
# page; PostgreSQL runs a real primary and streaming standby; Django, its
# Postgres driver and gunicorn serve a real Django admin site on both.
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
/usr/bin/python3 -c 'import django' >/dev/null 2>&1 || missing+=(python3-django)
/usr/bin/python3 -c 'import psycopg2' >/dev/null 2>&1 || missing+=(python3-psycopg2)
[ -x /usr/bin/gunicorn ] || missing+=(gunicorn)
# Rails 6.1, its Postgres driver, puma and Devise serve a real Rails app on
# both.
command -v rails >/dev/null 2>&1 || missing+=(ruby-rails)
ruby -e 'require "pg"' >/dev/null 2>&1 || missing+=(ruby-pg)
[ -x /usr/bin/puma ] || missing+=(puma)
ruby -e 'require "devise"' >/dev/null 2>&1 || missing+=(ruby-devise)
if [ ${#missing[@]} -gt 0 ]; then
	echo "test/run.sh: installing ${missing[*]}"
	sudo=""
	[ "$(id -u)" -ne 0 ] && sudo="sudo"
	# An install cut short earlier leaves dpkg refusing every other until
	# it is finished; finishing it is a no-op otherwise.
	DEBIAN_FRONTEND=noninteractive $sudo dpkg --configure -a
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

export ROUTER_REQUIRE_BROWSER=1 ROUTER_REQUIRE_POSTGRES=1 ROUTER_REQUIRE_DJANGO=1 ROUTER_REQUIRE_RAILS=1
go test -race -count=1 ./...

# The end-to-end fault and consistency tests again, with the router binary
# itself built with the race detector (the memory-bound tests are left out:
# the detector multiplies memory).
ROUTER_E2E_RACE=1 go test -count=1 -run 'TestRouting|TestPin|TestAppSteers|TestReplica|TestHealthPath|TestHung|TestEveryReplica|TestPrimaryDown|TestWrites|TestSpillover|TestLeastOut|TestUpgrade|TestForwarding|TestUpstream|TestClientGone|TestSigterm|TestPostgres|TestMetricsMove|TestStatusJSON|TestDatabaseUnreachable|TestIdleConnectionClosedByTheApp|TestEarly|TestClientGoneMidBody|TestSlowUpload|TestMalformedChunked|TestClientLeaves|TestHalfClosed|TestUpstreamSendTimeout|TestClientSendTimeout|TestSmugglingProbes|TestInterim|TestReplayReadErrors|TestTrailersAndBodiless|TestExpectContinue|TestHTTP10|TestStrayBytes|TestPlanted|TestEarlyAnswerCloses|TestConnectionHeaderCannot|TestInvalidStatus|TestSwitchingProtocols|TestTunnelHalf|TestStalledBody|TestStalledRequestBody|TestAmbiguousRequestFraming|TestEveryConnectionHeader|TestNoInterimResponses|TestPathRulesSee|TestDatabasePlane|TestWALReadsCoalesce|TestRails' ./test

# Each fuzz target for a few seconds beyond its committed seed corpus. The
# budgets are execution counts, not durations: Go 1.26's fuzz coordinator can
# report a spurious "context deadline exceeded" when a -fuzztime duration
# ends mid-run (go.dev/issue/75804). FUZZTIME=10m overrides for a long run.
for target in cookie:FuzzVerify:200000x pathrule:FuzzMatch:200000x config:FuzzParseReplicas:100000x \
	router:FuzzLogValue:50000x router:FuzzJSONString:40000x router:FuzzRequestID:50000x \
	router:FuzzServe:400x; do
	IFS=: read -r pkg name budget <<<"$target"
	if ! out=$(go test -run='^$' -fuzz="^${name}\$" -fuzztime="${FUZZTIME:-$budget}" "./$pkg" 2>&1); then
		echo "$out"
		exit 1
	fi
	echo "$out" | tail -n 1
done

# The soak test runs alone, so its load does not disturb the timing of the
# fault tests above (SOAK_DURATION=10m for a long run).
SOAK_DURATION=${SOAK_DURATION:-2m} go test -count=1 -run '^TestSoak$' -v ./test | grep -E '^(=== RUN|--- |ok|FAIL|PASS)|soak' 
