#!/usr/bin/env bash
# Points schemathesis (a third-party contract fuzzer, from PyPI) at a real proctord's
# /openapi.json with every check and every phase, stateful included: once with
# authentication on (an admin and a token this script creates), once with it off.
# Any finding fails. The seed is printed so that a failure can be replayed:
#   tests/conformance/run.sh <proctord binary> [seed]
set -euo pipefail
proctord="${1:?usage: run.sh PROCTORD [SEED]}"
seed="${2:-${SCHEMATHESIS_SEED:-$(( (RANDOM << 15) | RANDOM ))}}"
examples="${SCHEMATHESIS_MAX_EXAMPLES:-25}"
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start NAME AUTH: a proctord on the embedded default with its own data directory.
start() {
  local name="$1" auth="$2" port
  port="$(free_port)"
  mkdir -p "$work/$name"
  # The brake on bad credentials is off: the fuzzer sends bad ones on purpose (to check
  # they are refused), and a blocked address would leave the rest untested behind 429s.
  export PROCTOR_DATA_DIR="$work/$name" PROCTOR_APP_PORT="$port" PROCTOR_AUTH="$auth" \
    PROCTOR_LOG_LEVEL=warn PROCTOR_BAD_CREDENTIALS_PER_MINUTE=0
  if [ "$auth" = on ]; then
    "$proctord" user add fuzzer@example.com --admin >/dev/null
    token="$("$proctord" token create fuzzer@example.com --name schemathesis | tail -n 1)"
  fi
  "$proctord" serve >"$work/$name.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null
  base="http://127.0.0.1:$port"
}

# fuzz NAME [schemathesis options]
fuzz() {
  local name="$1"; shift
  echo "==> schemathesis against proctord with authentication $name (seed $seed, $examples examples per operation)"
  # One worker: CPython 3.11 can fail compiling hypothesis's lambdas in parallel threads.
  if ! SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$here" schemathesis --config-file "$here/schemathesis.toml" \
      run "$base/openapi.json" --checks all --seed "$seed" --max-examples "$examples" \
      --workers 1 --no-color --request-timeout 30 "$@"; then
    echo "schemathesis found problems with authentication $name; replay with: $0 $proctord $seed" >&2
    echo "--- proctord's log:" >&2
    tail -n 50 "$work/$name.log" >&2
    return 1
  fi
}

status=0
start off off
fuzz off || status=1
start on on
fuzz on -H "Email-Id: fuzzer@example.com" -H "Access-Token: $token" || status=1
exit "$status"
