#!/usr/bin/env bash
# deploy/test.sh — THE way to run Latchkey's tests (README: `deploy/test.sh`).
#
# Starts/checks the services (deploy/services.sh), exports the LATCHKEY_TEST_*
# variables the integration tests read, and runs the whole suite with
# cargo-nextest. Extra arguments go to `cargo nextest run`, so
# `deploy/test.sh walkthrough` runs only the tests matching "walkthrough".
# Exits with the test runner's exit code.
set -euo pipefail

readonly SCRIPT_NAME=test.sh

log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() {
  printf '%s: ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2
  exit 1
}

: "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"
export HOME

cd "$(dirname "${BASH_SOURCE[0]}")/.."

service_env="$(deploy/services.sh --print-env)" || die "deploy/services.sh failed: a service the tests need is missing (see above)"
eval "$service_env"
log "test environment:"
printf '%s\n' "$service_env" | sed "s/^export /$SCRIPT_NAME:   /" >&2

# A persistent target dir outside the work tree: a cold build takes minutes.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/latchkey-target}"
log "CARGO_TARGET_DIR=$CARGO_TARGET_DIR"

if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || die "cargo not found on PATH (nor in $HOME/.cargo/bin)"

if ! cargo nextest --version >/dev/null 2>&1; then
  log "cargo-nextest missing, installing it (cargo install cargo-nextest --locked)"
  cargo install cargo-nextest --locked || die "cargo install cargo-nextest failed"
fi

log "running: cargo nextest run --workspace --all-targets --no-fail-fast${*:+ $*}"
exec cargo nextest run --workspace --all-targets --no-fail-fast "$@"
