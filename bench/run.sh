#!/usr/bin/env bash
# Regenerates bench/results.json, bench/throughput.svg and the generated blocks of
# bench/RESULTS.md (the hand-written prose around them is kept) from a fresh run:
# builds snapferry and the harness (release), installs the peers (cached under
# ~/.cache/snapferry; a peer that cannot be installed is listed with the reason), and runs
# every workload against two fresh MinIO servers on loopback. Extra arguments go to
# `snapferry-bench run` (e.g. --scale 0.05 --reps 1 for a quick smoke run).
#   bash bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
target="${CARGO_TARGET_DIR:-target}"

echo "run.sh: building snapferry and snapferry-bench (release)..." >&2
cargo build --release -p snapferry -p snapferry-bench >&2

minio=$(bash fixtures/install-minio.sh)
args=()
# A peer's installer failing is not fatal: the peer is listed with the reason.
peer() {
  local name=$1 script=$2 bin err
  err=$(mktemp)
  if bin=$(bash "$script" 2>"$err"); then
    args+=("--$name" "$bin")
  elif [ "$name" = rclone ] && command -v rclone >/dev/null; then
    # The newest rclone that builds here failed to build: Debian's, if installed.
    args+=("--rclone" "$(command -v rclone)")
  else
    args+=("--unavailable" "$name=$(basename "$script") failed: $(grep -v '^\s*$' "$err" | tail -1)")
  fi
  rm -f "$err"
}
peer rclone fixtures/install-rclone.sh
peer mc fixtures/install-mc.sh
peer s3sync fixtures/install-s3sync.sh

# perf profiles of snapferry (W1, W2) when perf works here.
if command -v perf >/dev/null && perf stat -e task-clock true >/dev/null 2>&1; then
  args+=("--profile")
fi

# Each W2 run is 20,000 synchronous PUTs per tool: two repetitions keep the whole run
# within 30 minutes on a 2-core machine (the others get three).
case " $* " in *" --reps-w2"*) ;; *) args+=("--reps-w2" "2") ;; esac

rev="built from $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
if [ -n "$(git status --porcelain -- engine cli Cargo.lock 2>/dev/null)" ]; then
  rev="$rev plus uncommitted changes in engine/, cli/ or Cargo.lock"
fi

"$target/release/snapferry-bench" run \
  --snapferry "$target/release/snapferry" --snapferry-revision "$rev" --minio "$minio" "${args[@]}" \
  --out bench/RESULTS.md --chart bench/throughput.svg --json bench/results.json "$@"
echo "run.sh: done in $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s" >&2
