#!/usr/bin/env bash
# HTTP load test of samples/WebApi with wrk, on 127.0.0.1 only: POST /v1/infer (batched) against
# POST /v1/infer-unbatched (the same model on the same device, one item per launch) on the same server.
# Starts and stops the server itself; every wrk run is bounded in time. Writes a markdown report.
#
#   benchmarks/webapi-load.sh [seconds per run, default 10] [connection counts, default "1 16 64"]
#   OUT=path.md to write the report elsewhere (default benchmarks/results/webapi-load.md)
#   SERVER_ARGS="--Batching:Policy deadline" to pass configuration to the server
#   needs wrk: apt-get update && apt-get install -y wrk
set -euo pipefail
cd "$(dirname "$0")/.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

DURATION=${1:-10}
CONNECTIONS=${2:-"1 16 64"}
WARMUP=3
THREADS=1 # one wrk thread: on 2 cores the generator and the server share the machine; keep the generator's share small
OUT=${OUT:-benchmarks/results/webapi-load.md}
SERVER_ARGS=${SERVER_ARGS:-} # extra server arguments, e.g. "--Batching:Policy deadline"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get update && apt-get install -y wrk" >&2; exit 1; }

work=$(mktemp -d)
server=
cleanup() {
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server"
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "== build (Release)"
dotnet build -c Release samples/WebApi -o "$work/app" -v q -nologo >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }

echo "== start the server on a free 127.0.0.1 port"
# shellcheck disable=SC2086 # SERVER_ARGS is a list of arguments
dotnet "$work/app/Batching.Samples.WebApi.dll" --port 0 $SERVER_ARGS >"$work/server.log" 2>&1 &
server=$!
url=
for _ in $(seq 1 600); do
  url=$(grep -oE 'Now listening on: http://127\.0\.0\.1:[0-9]+' "$work/server.log" | head -1 | sed 's/^Now listening on: //' || true)
  [ -n "$url" ] && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log"; echo "the server exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { cat "$work/server.log"; echo "the server did not start within 60 s" >&2; exit 1; }
case "$url" in http://127.0.0.1:*) ;; *) echo "refusing to load anything but 127.0.0.1: $url" >&2; exit 1 ;; esac
echo "   $url"

# One fixed, valid request body: 256 features in [-1, 1).
awk 'BEGIN { srand(1); printf "{\"features\":["; for (i = 0; i < 256; i++) printf "%s%.6f", (i ? "," : ""), rand() * 2 - 1; print "]}" }' >"$work/body.json"
cat >"$work/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$work/body.json", "r")
wrk.body = f:read("*a")
f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
EOF

# Both endpoints must give the same answer before their speed is compared.
a=$(curl -sf -H 'Content-Type: application/json' --data-binary @"$work/body.json" "$url/v1/infer")
b=$(curl -sf -H 'Content-Type: application/json' --data-binary @"$work/body.json" "$url/v1/infer-unbatched")
[ "$a" = "$b" ] || { echo "the endpoints disagree: $a vs $b" >&2; exit 1; }
device=$(curl -sf "$url/healthz" | grep -oE '"infer":"[^"]*"' | sed 's/^"infer":"Healthy: //; s/\\u0027//g; s/"$//')

batch_stat() { # sum or count of batching.batch.size for one processor (reads all input: an early exit would fail curl under pipefail)
  curl -sf "$url/metrics" | awk -v m="batching_batch_size_$1" -v p="batching_processor=\"$2\"" '!found && index($0, m "{") == 1 && index($0, p) { v = $NF; found = 1 } END { print v }'
}

run() { # connections endpoint seconds -> "RESULT requests duration_us p50_us p99_us non2xx socket_errors"
  timeout $(($3 + 30)) wrk -t"$THREADS" -c"$1" -d"$3"s --timeout 5s -s "$work/post.lua" "$url/v1/$2" | grep '^RESULT'
}

rows=
ratios=
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# Warm the whole process (JIT tiers, thread pool, Kestrel) on both endpoints first, so neither pays for it.
max_c=$(echo "$CONNECTIONS" | tr ' ' '\n' | sort -n | tail -1)
for ep in infer infer-unbatched; do run "$max_c" "$ep" 5 >/dev/null; done

order="infer infer-unbatched"
for c in $CONNECTIONS; do
  declare -A rps p50 p99
  for ep in $order; do
    echo "== $ep, $c connection(s): ${WARMUP} s warm-up, ${DURATION} s measured"
    run "$c" "$ep" "$WARMUP" >/dev/null
    s0=$(batch_stat sum "$ep"); n0=$(batch_stat count "$ep")
    read -r _ requests duration lat50 lat99 non2xx errors < <(run "$c" "$ep" "$DURATION")
    s1=$(batch_stat sum "$ep"); n1=$(batch_stat count "$ep")
    rps[$ep]=$(awk -v r="$requests" -v d="$duration" 'BEGIN { printf "%.0f", r / (d / 1e6) }')
    p50[$ep]=$(awk -v x="$lat50" 'BEGIN { printf "%.2f", x / 1000 }')
    p99[$ep]=$(awk -v x="$lat99" 'BEGIN { printf "%.2f", x / 1000 }')
    mean=$(awk -v a="$s0" -v b="$s1" -v m="$n0" -v n="$n1" 'BEGIN { printf "%.1f", (n > m) ? (b - a) / (n - m) : 0 }')
    echo "   ${rps[$ep]} req/s, p50 ${p50[$ep]} ms, p99 ${p99[$ep]} ms, mean batch $mean, non-2xx $non2xx, socket errors $errors"
    rows+="| $c | \`/v1/$ep\` | $requests | ${rps[$ep]} | ${p50[$ep]} | ${p99[$ep]} | $mean | $non2xx | $errors |"$'\n'
  done
  ratios+=$(awk -v c="$c" -v rb="${rps[infer]}" -v ru="${rps[infer-unbatched]}" -v b50="${p50[infer]}" -v u50="${p50[infer-unbatched]}" \
    -v b99="${p99[infer]}" -v u99="${p99[infer-unbatched]}" \
    'BEGIN { printf "| %s | %.2fx | %.2fx | %.2fx |", c, rb / ru, b50 / u50, b99 / u99 }')$'\n'
  unset rps p50 p99
  order=$(echo "$order" | awk '{ print $2, $1 }') # alternate which endpoint goes first, so drift in background load favours neither
done

load_before_after="$load_before before the runs, $(cut -d' ' -f1-3 /proc/loadavg) after"
mkdir -p "$(dirname "$OUT")"
{
  echo "# Web API under HTTP load: batched vs unbatched"
  echo
  echo "Generated by \`${SERVER_ARGS:+SERVER_ARGS=\"$SERVER_ARGS\" }benchmarks/webapi-load.sh $DURATION \"$CONNECTIONS\"\`."
  echo
  echo "- Date: $(date)"
  echo "- Machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'), $(free -g | awk '/^Mem:/ { print $2 }') GiB, $(uname -sr); load average (1/5/15 min): $load_before_after"
  echo "- .NET SDK $(dotnet --version), Release build; $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
  echo "- Model: dense 256 -> 64 + ReLU; device: $device"
  echo "- Server: \`dotnet Batching.Samples.WebApi.dll --port 0 $SERVER_ARGS\` with samples/WebApi/appsettings.json (adaptive policy unless overridden, MaxBatchSize 64, MaxDelay 1 ms, Reject at 1,024 queued)"
  echo "- Load: \`wrk -t$THREADS -c<connections> -d${DURATION}s --timeout 5s -s post.lua $url/v1/<endpoint>\`, after 5 s on each endpoint at the highest connection count and a ${WARMUP} s warm-up run of the same command; closed loop, one fixed valid body, generator and server on the same $(nproc) cores"
  echo
  echo "| connections | endpoint | requests | req/s | p50 ms | p99 ms | mean batch | non-2xx | socket errors |"
  echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  printf '%s' "$rows"
  echo
  echo "| connections | req/s batched / unbatched | p50 batched / unbatched | p99 batched / unbatched |"
  echo "| ---: | ---: | ---: | ---: |"
  printf '%s' "$ratios"
} >"$OUT"
echo "== wrote $OUT"
cat "$OUT"
