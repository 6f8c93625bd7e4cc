#!/usr/bin/env bash
# Check systemd/modemgate.service:
#   - `systemd-analyze verify` is clean (no output at all, not just exit 0: unknown keys only warn);
#   - the offline security review rates its exposure at most 2.0 ("OK" is up to 4.9; we keep slack small
#     so a dropped hardening line fails CI).
# Installs systemd (Debian) if systemd-analyze is missing. Prints the exposure score.
set -euo pipefail
cd "$(dirname "$0")/.."

unit=systemd/modemgate.service
max_exposure=20 # tenths: 2.0

if ! command -v systemd-analyze >/dev/null; then
    echo "== installing systemd (for systemd-analyze)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq systemd >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# verify insists that ExecStart's binary exists; point the unit at a stand-in with the same name.
printf '#!/bin/sh\nexit 0\n' >"$work/modemgate"
chmod +x "$work/modemgate"
sed "s#/usr/bin/modemgate#$work/modemgate#g" "$unit" >"$work/modemgate.service"

echo "== systemd-analyze verify $unit"
if ! out=$(systemd-analyze verify "$work/modemgate.service" 2>&1) || [ -n "$out" ]; then
    echo "$out"
    echo "FAIL: systemd-analyze verify reported problems" >&2
    exit 1
fi
echo "clean"

echo "== systemd-analyze security --offline=yes $unit"
report=$(systemd-analyze security --offline=yes "$unit" 2>&1) || true
echo "$report" | grep -E '✗|Overall' || true
if ! systemd-analyze security --offline=yes --threshold="$max_exposure" "$unit" >/dev/null 2>&1; then
    echo "FAIL: exposure above $((max_exposure / 10)).$((max_exposure % 10))" >&2
    exit 1
fi
echo "check-systemd: ok"
