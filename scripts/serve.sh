#!/usr/bin/env bash
# Builds the gateway and the shipped plugins, puts every plugin as <name>.wasm into the
# plugins_dir of the default configuration (data/plugins), and starts the gateway.
# Extra arguments go to `tollgate serve` (e.g. --config path/to/tollgate.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null
cargo build --profile plugin --target wasm32-wasip2 -p tollgate-plugin-openai -p tollgate-plugin-minimax \
  -p tollgate-plugin-siliconflow
cargo build --release -p tollgate

plugins_dir="${TOLLGATE_PLUGINS_DIR:-data/plugins}"
mkdir -p "$plugins_dir"
for name in openai minimax siliconflow; do
  # Write beside, then rename: a running gateway never reads half a file.
  cp "target/wasm32-wasip2/plugin/tollgate_plugin_${name}.wasm" "$plugins_dir/.${name}.wasm.part"
  mv "$plugins_dir/.${name}.wasm.part" "$plugins_dir/${name}.wasm"
done

exec target/release/tollgate serve "$@"
