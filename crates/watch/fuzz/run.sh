#!/usr/bin/env bash
# Fuzzes the audit webhook decoder with libFuzzer for a number of seconds.
#
#   crates/watch/fuzz/run.sh [SECONDS]      (default 60)
#
# Works on the stable toolchain: cargo-fuzz needs nightly-only flags, which
# RUSTC_BOOTSTRAP=1 allows, and `--sanitizer none` needs no nightly runtime.
# Installs cargo-fuzz from crates.io when it is missing. Starts from the
# seeds in seeds/audit_batch (real kube-apiserver batches); new inputs go to
# corpus/audit_batch, a crashing input to artifacts/audit_batch, and the
# script then exits non-zero.
set -euo pipefail

seconds="${1:-60}"
cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version 0.13.2 --locked
fi

# The fuzz build is slow and the same for every clone: keep it per user.
target_dir="${XDG_CACHE_HOME:-$HOME/.cache}/driftwarden/fuzz-target"

mkdir -p corpus/audit_batch
RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none --target-dir "$target_dir" audit_batch \
    corpus/audit_batch seeds/audit_batch -- \
    -dict=audit.dict -max_len=65536 -max_total_time="$seconds" -print_final_stats=1
