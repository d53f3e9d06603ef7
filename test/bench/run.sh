#!/usr/bin/env bash
# Benchmarks the router against the bare upstream, a bare proxy on the same
# data plane (test/bench/bareproxy) and, where installed, HAProxy and nginx,
# on loopback: wrk in interleaved rounds (ratios are taken
# within a round, which cancels part of a noisy machine's drift), then a
# fixed-rate run for the latency the router adds.
#
#   bash test/bench/run.sh                 # about 4 minutes
#   ROUNDS=5 DURATION=4 CONNS="64 256" RATE=2000 bash test/bench/run.sh
#   UPSTREAM_TLS=1 bash test/bench/run.sh  # the app over HTTPS, as Heroku apps are reached
#                                          # (self-signed; every proxy skips verification)
#
# Layout on 2+ cores: wrk on CPU 1; router, proxies and upstream on CPU 0.
# The router runs with every feature on: request logs (to a file), metrics,
# status counters, pin checks and health checks.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-4}
CONNS=${CONNS:-"64 256"}
RATE=${RATE:-2000}
UPSTREAM_TLS=${UPSTREAM_TLS:-0}
scheme=http upstream_tls=() bare_tls=() haproxy_tls="" nginx_scheme=http nginx_tls=""
if [ "$UPSTREAM_TLS" = 1 ]; then
	scheme=https upstream_tls=(-tls) bare_tls=(-tls) haproxy_tls=" ssl verify none" nginx_scheme=https
	nginx_tls="proxy_ssl_verify off; proxy_ssl_session_reuse on;"
	export UPSTREAM_TLS_INSECURE_SKIP_VERIFY=true
fi
work=$(mktemp -d /tmp/router-bench.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

if ! command -v wrk >/dev/null; then
	sudo=""; [ "$(id -u)" -ne 0 ] && sudo=sudo
	$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq wrk >/dev/null
fi
proxy_cpu="" wrk_cpu=""
if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
	proxy_cpu="taskset -c 0" wrk_cpu="taskset -c 1"
fi

go build -o "$work/router" .
go build -o "$work/upstream" ./test/bench/upstream
go build -o "$work/fixedrate" ./test/bench/fixedrate
go build -o "$work/bareproxy" ./test/bench/bareproxy

# One port per target; start and the configs below read it from here.
declare -A port=([direct]=18180 [router]=18181 [haproxy]=18182 [nginx]=18183 [bare]=18184)
app=127.0.0.1:${port[direct]}

# url_of target: what wrk asks; the upstream itself is HTTPS under
# UPSTREAM_TLS=1, every proxy is plain HTTP.
url_of() {
	if [ "$1" = direct ]; then echo "$scheme://127.0.0.1:${port[direct]}/"; else echo "http://127.0.0.1:${port[$1]}/"; fi
}

start() { # name cmd...: runs the target on CPU 0 and waits for port[name]
	local name=$1 p=${port[$1]}; shift
	if curl -sk -o /dev/null "$(url_of "$name")"; then
		# Something else would answer for $name, and be measured.
		echo "bench: port $p (for $name) is taken: $(ss -Hltnp "sport = :$p" | grep -o 'users:.*')" >&2
		exit 1
	fi
	$proxy_cpu "$@" >"$work/$name.log" 2>&1 &
	pids+=($!)
	eval "pid_$name=$!"
	for _ in $(seq 100); do
		curl -fsk -o /dev/null "$(url_of "$name")" && return 0
		sleep 0.1
	done
	echo "bench: $name did not come up on port $p" >&2
	cat "$work/$name.log" >&2
	exit 1
}

start direct "$work/upstream" -addr "$app" "${upstream_tls[@]}"
targets=(direct router bare)
PORT=${port[router]} PRIMARY_URL=$scheme://$app REPLICA_URLS=$scheme://$app \
	COOKIE_SECRET=bench-secret-0123456789abcdef0123456789 ADMIN_TOKEN=bench-token-0123456789 \
	start router "$work/router"
# The same data plane with nothing on top: what the router's features cost.
start bare "$work/bareproxy" -addr "127.0.0.1:${port[bare]}" -upstream "$app" "${bare_tls[@]}"

if command -v haproxy >/dev/null; then
	cat >"$work/haproxy.cfg" <<CFG
global
  nbthread 1
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always
frontend f
  bind 127.0.0.1:${port[haproxy]}
  default_backend b
backend b
  server u $app$haproxy_tls
CFG
	start haproxy haproxy -db -f "$work/haproxy.cfg"
	targets+=(haproxy)
fi
if command -v nginx >/dev/null; then
	cat >"$work/nginx.conf" <<CFG
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream u { server $app; keepalive 1024; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:${port[nginx]};
    location / { proxy_pass $nginx_scheme://u; proxy_http_version 1.1; proxy_set_header Connection ""; $nginx_tls }
  }
}
CFG
	start nginx nginx -c "$work/nginx.conf" -p "$work"
	targets+=(nginx)
fi

# ticks sums user and system CPU ticks of a process and its children
# (nginx's workers).
ticks() {
	local total=0 p
	for p in "$1" $(pgrep -P "$1" || true); do
		total=$((total + $(awk '{print $14+$15}' "/proc/$p/stat")))
	done
	echo "$total"
}
# wrk_run target conns seconds -> "rps p50_ms p99_ms cpu_us_per_req"
wrk_run() {
	local t=$1 c=$2 d=$3 pid_var="pid_$1" before after out
	before=$(ticks "${!pid_var}")
	out=$($wrk_cpu wrk -t1 -c"$c" -d"${d}s" --latency "$(url_of "$t")")
	after=$(ticks "${!pid_var}")
	echo "$out" | awk -v ticks=$((after - before)) -v hz="$(getconf CLK_TCK)" '
		function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000 }
		/^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
		/^Requests\/sec/ { rps = $2 }
		/requests in/ { n = $1 }
		END { printf "%.0f %.3f %.3f %.1f\n", rps, p50, p99, ticks / hz * 1e6 / n }'
}

echo "bench: targets ${targets[*]}; the app over $scheme; conns $CONNS; $ROUNDS rounds of ${DURATION}s; $(nproc) CPUs"
declare -A results
for c in $CONNS; do
	for t in "${targets[@]}"; do wrk_run "$t" "$c" 2 >/dev/null; done # warm pools
	for r in $(seq "$ROUNDS"); do
		order=("${targets[@]:r % ${#targets[@]}}" "${targets[@]:0:r % ${#targets[@]}}")
		for t in "${order[@]}"; do
			results[$c,$t,$r]=$(wrk_run "$t" "$c" "$DURATION")
		done
	done
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
ref=direct; [[ " ${targets[*]} " == *" haproxy "* ]] && ref=haproxy
printf '\n%-6s %-8s %8s %8s %8s %10s %10s %10s %8s\n' conns target rps p50_ms p99_ms cpu_us/req x_direct "x_$ref" rss_MB
for c in $CONNS; do
	for t in "${targets[@]}"; do
		rps=() p50=() p99=() cpu=() vd=() vr=()
		for r in $(seq "$ROUNDS"); do
			read -r a b d e <<<"${results[$c,$t,$r]}"
			read -r da _ _ _ <<<"${results[$c,direct,$r]}"
			read -r ra _ _ _ <<<"${results[$c,$ref,$r]}"
			rps+=("$a") p50+=("$b") p99+=("$d") cpu+=("$e")
			vd+=("$(awk -v x="$a" -v y="$da" 'BEGIN{printf "%.3f", x/y}')")
			vr+=("$(awk -v x="$a" -v y="$ra" 'BEGIN{printf "%.3f", x/y}')")
		done
		pid_var="pid_$t"
		rss=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/${!pid_var}/status")
		printf '%-6s %-8s %8s %8s %8s %10s %10s %10s %8s\n' "c$c" "$t" \
			"$(printf '%s\n' "${rps[@]}" | median)" "$(printf '%s\n' "${p50[@]}" | median)" \
			"$(printf '%s\n' "${p99[@]}" | median)" "$(printf '%s\n' "${cpu[@]}" | median)" \
			"$(printf '%s\n' "${vd[@]}" | median)" "$(printf '%s\n' "${vr[@]}" | median)" "$rss"
	done
done

echo
echo "fixed rate, $RATE req/s for 10 s (latency from each request's due time):"
for t in direct router direct router; do
	printf '%-8s ' "$t"
	$wrk_cpu "$work/fixedrate" -url "$(url_of "$t")" -rate "$RATE" -duration 10s
done
