#!/usr/bin/env bash
# Builds the gateway for production with profile-guided optimization (PGO) and prints the
# binary's path (target/pgo/tollgate) on its last line. Three steps, ~25 minutes on 2 cores:
#   1. an instrumented build (target/pgo/train: it counts what runs);
#   2. a training run: tests/bench/run.sh against that build (the mock vendor; chats whole and
#      streamed, one at a time and 32 at once; a 500-chunk stream; the task, socket and
#      prefetch flows), which writes the counts;
#   3. the release build again, its code laid out and inlined by those counts
#      (target/pgo/build), copied to target/pgo/tollgate.
# What the training does not run (the Anthropic and Gemini surfaces, the admin API, the
# console) is built as rarely run code: it works the same, optimized for size.
# Measured (tests/bench/run.sh, alternated with the plain build): README, "Performance".
#
# Needs rustup's llvm-tools component (llvm-profdata, the same LLVM as rustc); it is added
# when missing. Extra arguments go to the training's run.sh (e.g. UPSTREAM_TLS=1 in the
# environment trains the TLS path).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
host=$(rustc -vV | sed -n 's/^host: //p')
sysroot_bin="$(rustc --print sysroot)/lib/rustlib/$host/bin"
if [ ! -x "$sysroot_bin/llvm-profdata" ]; then
  rustup component add llvm-tools
fi
profdata="$sysroot_bin/llvm-profdata"

out=$root/target/pgo
counts=$out/counts
rm -rf "$counts"
mkdir -p "$counts"

echo "[pgo] 1/3: the instrumented build (target/pgo/train)" >&2
# --target: the flags reach the gateway's code only, not build scripts or proc macros.
RUSTFLAGS="-Cprofile-generate=$counts" CARGO_TARGET_DIR=$out/train \
  cargo build --release --target "$host" -p tollgate

echo "[pgo] 2/3: the training run (tests/bench/run.sh against it)" >&2
GW_BIN=$out/train/$host/release/tollgate DURATION=${DURATION:-3} SESSIONS=${SESSIONS:-50} \
  OUT=$out/training.json "$root/tests/bench/run.sh" "$@" >&2
echo "[pgo] (the verdict above is the instrumented build's, which counts as it runs: a training run, not a measurement)" >&2
ls "$counts"/*.profraw > /dev/null 2>&1 || { echo "[pgo] the training run wrote no counts" >&2; exit 1; }
"$profdata" merge -o "$out/merged.profdata" "$counts"/*.profraw
# Named by its content: cargo rebuilds what its flags change, so new counts rebuild every
# crate with them (under one name, only the crates whose code changed would be).
profile=$out/counts-$(sha256sum "$out/merged.profdata" | cut -c1-16).profdata
mv "$out/merged.profdata" "$profile"
find "$out" -maxdepth 1 -name 'counts-*.profdata' ! -path "$profile" -delete

echo "[pgo] 3/3: the optimized build (target/pgo/build)" >&2
RUSTFLAGS="-Cprofile-use=$profile -Cllvm-args=-pgo-warn-missing-function=false" \
  CARGO_TARGET_DIR=$out/build cargo build --release --target "$host" -p tollgate
cp "$out/build/$host/release/tollgate" "$out/.tollgate.part"
mv "$out/.tollgate.part" "$out/tollgate"
echo "$out/tollgate"
