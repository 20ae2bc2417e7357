#!/usr/bin/env bash
# Bounded fuzzing of the decoders (docs/FUZZING.md): installs cargo-fuzz if missing, builds the
# targets of tests/fuzz/ on the stable toolchain with no sanitizer (`-s none`: sanitizers need
# nightly; libFuzzer's coverage guidance and the targets' own assertions still run), then runs
# each target for FUZZ_SECONDS (default 60) from its seed corpus, tests/fuzz/corpus/<target>/.
# Fails on the first crash, panic, timeout or out-of-memory; the input that caused it is saved
# under tests/artifacts/fuzz/artifacts/<target>/, and the corpus the run grew (never the seed
# corpus) under tests/artifacts/fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
out="$root/tests/artifacts/fuzz"
seconds=${FUZZ_SECONDS:-60}
cargo_fuzz_version=0.13.2
targets=(protocol replay_csv symbol socketio ws_inbound throttle)

if [[ "$(cargo fuzz --version 2>/dev/null || true)" != *"$cargo_fuzz_version"* ]]; then
  echo "installing cargo-fuzz $cargo_fuzz_version"
  cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi
# libfuzzer-sys compiles libFuzzer (C++).
if ! command -v c++ >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null; fi
fi

start=$(date +%s)
cargo fmt --manifest-path tests/fuzz/Cargo.toml --check || { echo "tests/fuzz is not formatted: cargo fmt --manifest-path tests/fuzz/Cargo.toml"; exit 1; }
# The library's fuzzing entry points are compiled only with the feature: lint them here.
cargo clippy -q --lib --features fuzzing -- -D warnings
cargo fuzz build --fuzz-dir tests/fuzz -s none
echo "built in $(( $(date +%s) - start )) s"

rm -rf "$out"
for target in "${targets[@]}"; do
  mkdir -p "$out/corpus/$target" "$out/artifacts/$target"
  log="$out/$target.log"
  # The first corpus directory receives what the run finds; the seeds are only read.
  # -timeout: an input that takes 10 s is a hang; -rss_limit_mb: a decoder that balloons fails.
  if ! cargo fuzz run --fuzz-dir tests/fuzz -s none "$target" "$out/corpus/$target" "tests/fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$out/artifacts/$target/" >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz target $target failed: the input is in tests/artifacts/fuzz/artifacts/$target/, the log in tests/artifacts/fuzz/$target.log"
    echo "replay it: cargo fuzz run --fuzz-dir tests/fuzz -s none $target tests/artifacts/fuzz/artifacts/$target/<file>"
    exit 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  time_s=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log")
  corpus=$(ls "$out/corpus/$target" | wc -l)
  echo "fuzz $target: ${runs:-?} runs in ${time_s:-?} s ($(( ${runs:-0} / ${time_s:-1} )) execs/s), corpus $corpus inputs, no crash"
done
echo "fuzzing done in $(( $(date +%s) - start )) s"
