#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing client (all 517 cases) against `examples/echo
# --transport ws` and fails when any case FAILED or is UNIMPLEMENTED. Installs the suite
# (Python 2.7 from pyenv, autobahntestsuite 0.8.2) into a virtualenv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${AUTOBAHN_PORT:-9001}
CASES=${AUTOBAHN_CASES:-*}
VENV=${AUTOBAHN_VENV:-$HOME/.cache/sockloop-autobahn}
if [ ! -x "$VENV/bin/wstest" ]; then
  root=${PYENV_ROOT:-$HOME/.pyenv}
  PY27=$(ls -d "$root"/versions/2.7*/bin/python 2>/dev/null | head -1 || true)
  if [ -z "$PY27" ] && command -v pyenv >/dev/null; then
    pyenv install -s 2.7.18
    PY27=$(ls -d "$root"/versions/2.7*/bin/python | head -1)
  fi
  [ -n "$PY27" ] || { echo "autobahn: no Python 2.7 (pyenv) found" >&2; exit 2; }
  "$PY27" -m pip install -q "virtualenv<20.22" >/dev/null 2>&1
  "$PY27" -m virtualenv -q "$VENV" >/dev/null
  "$VENV/bin/pip" install -q autobahntestsuite==0.8.2 >/dev/null 2>&1
fi
cargo build --release --example echo
target=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
"$target/release/examples/echo" --transport ws --addr "127.0.0.1:$PORT" >/tmp/sockloop-autobahn-echo.log 2>&1 &
ECHO=$!
trap 'kill $ECHO 2>/dev/null || true' EXIT
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
W=$(mktemp -d)
cat >"$W/spec.json" <<JSON
{"outdir": "$W/reports", "servers": [{"agent": "sockloop", "url": "ws://127.0.0.1:$PORT"}],
 "cases": ["$CASES"], "exclude-cases": [], "exclude-agent-cases": {}}
JSON
(cd "$W" && timeout 1800 "$VENV/bin/wstest" -m fuzzingclient -s spec.json >"$W/log" 2>&1) || true
python3 - "$W" <<'PY'
import collections, json, sys
w = sys.argv[1]
try:
    idx = json.load(open(w + "/reports/index.json"))["sockloop"]
except Exception as e:
    print("autobahn: no report:", e); sys.exit(1)
key = lambda s: [int(x) for x in s.split(".")]
bad = sorted((k for k, v in idx.items()
              if v["behavior"] in ("FAILED", "UNIMPLEMENTED") or v["behaviorClose"] == "FAILED"), key=key)
print("behavior:", dict(collections.Counter(v["behavior"] for v in idx.values())))
print("close:", dict(collections.Counter(v["behaviorClose"] for v in idx.values())))
print("failed or unimplemented:", " ".join(bad) if bad else "none")
print("autobahn_pass=%d/%d" % (len(idx) - len(bad), len(idx)))
sys.exit(1 if bad else 0)
PY
