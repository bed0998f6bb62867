#!/usr/bin/env bash
# Builds the gateway and the shipped plugins, puts every plugin as <name>.wasm into the
# plugins_dir of the default configuration (data/plugins), and starts the gateway. It also
# starts the demo upstream (the mock vendor from tests/mock-vendor on 127.0.0.1:18090), which
# the default configuration's `demo` channel points at; TOLLGATE_NO_DEMO=1 skips it.
# Extra arguments go to `tollgate serve` (e.g. --config path/to/tollgate.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-unknown-unknown >/dev/null
# shellcheck disable=SC2046 # one -p flag per shipped plugin (plugins/shipped names them)
cargo plugins $(sed 's/^/-p tollgate-plugin-/' plugins/shipped)
cargo build --release -p tollgate -p mock-vendor

plugins_dir="${TOLLGATE_PLUGINS_DIR:-data/plugins}"
mkdir -p "$plugins_dir"
while read -r name; do
  # Write beside, then rename: a running gateway never reads half a file.
  cp "target/wasm32-unknown-unknown/plugin/tollgate_plugin_${name}.wasm" "$plugins_dir/.${name}.wasm.part"
  mv "$plugins_dir/.${name}.wasm.part" "$plugins_dir/${name}.wasm"
done < plugins/shipped

demo_pid=
if [ "${TOLLGATE_NO_DEMO:-}" != 1 ]; then
  target/release/mock-vendor --listen 127.0.0.1:18090 --threads 1 > /dev/null &
  demo_pid=$!
  echo "demo upstream (mock vendor) on 127.0.0.1:18090, pid $demo_pid; TOLLGATE_NO_DEMO=1 skips it" >&2
fi
stop_demo() { if [ -n "$demo_pid" ]; then kill "$demo_pid" 2>/dev/null || true; fi; }
trap stop_demo EXIT

# The gateway runs as a child so that the demo upstream stops with it; signals sent to this
# script (SIGTERM, Ctrl-C, SIGHUP for a channel reload) are passed on to the gateway.
target/release/tollgate serve "$@" &
gateway_pid=$!
for sig in TERM INT HUP; do
  trap 'kill -'"$sig"' "$gateway_pid" 2>/dev/null || true' "$sig"
done
status=0
while kill -0 "$gateway_pid" 2>/dev/null; do
  wait "$gateway_pid" || status=$?
done
exit "$status"
