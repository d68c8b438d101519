#!/usr/bin/env bash
# Installs the Debian packages the test suite and the benchmarks need when they are missing.
# Each line: a command to look for, then the package that provides it.
set -euo pipefail
needed=(
  "initdb postgresql"
  "redis-server redis-server"
  "wrk wrk"
)
missing=()
for entry in "${needed[@]}"; do
  cmd=${entry%% *}; pkg=${entry#* }
  command -v "$cmd" >/dev/null 2>&1 || compgen -G "/usr/lib/postgresql/*/bin/$cmd" >/dev/null \
    || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
