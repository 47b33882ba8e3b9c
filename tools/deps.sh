#!/usr/bin/env bash
# tools/deps.sh: install the Debian packages BitVelocity needs (tools/packages.txt),
# only those missing.  As root it runs apt-get; otherwise it prints the command
# and fails if anything is missing.  Idempotent: a second run does nothing.
source "$(dirname "$0")/lib.sh"

mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$BV_TOP/tools/packages.txt" | grep -v '^$')

missing=()
for pkg in "${wanted[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
    bv_say "deps: all ${#wanted[@]} Debian packages are installed"
    exit 0
fi

cmd="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
    bv_warn "missing Debian packages: ${missing[*]}"
    bv_warn "install them as root with:"
    printf '  sudo apt-get update && sudo %s\n' "$cmd" >&2
    exit 1
fi

bv_say "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine's package lists are stale or empty.
apt-get update -q >/dev/null || bv_die "apt-get update failed; is the Debian archive reachable?"
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || bv_die "apt-get install failed for: ${missing[*]}"
bv_say "deps: installed ${#missing[@]} package(s)"
