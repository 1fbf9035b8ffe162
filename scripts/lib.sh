# Shared by scripts/demo, scripts/test, scripts/emulators and scripts/bench: where things
# live and the one-time set-up of what this machine lacks. Sourced, not run.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Kept outside the clone so a fresh clone reuses the venv and the build.
PILLARS_CACHE=${PILLARS_CACHE:-$HOME/.cache/pillars}
VENV=$PILLARS_CACHE/venv
RUN_DIR=$ROOT/.pillars/run
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PILLARS_CACHE/target}
export PATH="$HOME/.cargo/bin:$PATH"

# The Lambda functions: one binary each, deployed by the CDK app.
LAMBDA_FUNCTIONS=(scp-webhook scp-mirror scp-reconcile scp-canary docker-mirror docker-canary log-sink log-heartbeat config-eval)

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else die "installing system packages needs root: run as root or install sudo"; fi
}

# Debian packages: the registry stand-in, skopeo as the independent image client, git.
ensure_debian_packages() {
  local missing=()
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v git >/dev/null || missing+=(git)
  command -v curl >/dev/null || missing+=(curl)
  [ ${#missing[@]} -eq 0 ] && return
  say "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq || die "apt-get update failed: check the network and the apt sources"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
}

# The Python venv with moto and the reference clients, rebuilt when requirements change.
ensure_venv() {
  local stamp=$VENV/.requirements.sha256 want
  want=$(sha256sum "$ROOT/scripts/requirements.txt" | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return; fi
  say "creating the Python venv in $VENV (moto, boto3, git-remote-codecommit, aws-kinesis-agg, cfn-lint, cargo-lambda)"
  rm -rf "$VENV"
  mkdir -p "$PILLARS_CACHE"
  python3 -m venv "$VENV" || die "python3 -m venv failed: install python3-venv"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/scripts/requirements.txt" \
    || die "pip install of scripts/requirements.txt failed"
  echo "$want" >"$stamp"
}

ensure_rust() {
  command -v cargo >/dev/null || die "cargo is missing: install the Rust toolchain with rustup"
}

# The CDK app's packages, as package-lock.json pins them; reinstalled when it changes.
ensure_node_modules() {
  command -v npm >/dev/null || die "npm is missing: install Node.js 20 or later (the CDK app needs it)"
  local stamp=$ROOT/cdk/node_modules/.pillars-lock.sha256 want
  want=$(sha256sum "$ROOT/cdk/package-lock.json" | cut -d' ' -f1)
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return
  say "installing the CDK app's packages (npm ci)"
  (cd "$ROOT/cdk" && npm ci --no-audit --no-fund --loglevel=error) || die "npm ci in cdk/ failed"
  echo "$want" >"$stamp"
}

ensure_tools() {
  ensure_rust
  ensure_debian_packages
  ensure_venv
  ensure_node_modules
}

# Builds the binaries the stand-ins, the demo and the tests run.
build_binaries() {
  say "building the workspace"
  (cd "$ROOT" && cargo build --workspace --bins --quiet) || die "cargo build failed"
  PILLAR=$CARGO_TARGET_DIR/debug/pillar
}
