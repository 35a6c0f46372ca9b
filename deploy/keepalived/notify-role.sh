#!/bin/sh
# keepalived notify script: records this host's VRRP role where chain-co reads it
# ([ha] role_file). keepalived calls it as: notify-role.sh TYPE NAME STATE PRIORITY
# with STATE one of MASTER, BACKUP, FAULT, STOP.
set -u
ROLE_FILE=${CHAIN_CO_ROLE_FILE:-/run/chain-co/vrrp-role}
state=${3:-UNKNOWN}
dir=$(dirname "$ROLE_FILE")
mkdir -p "$dir"
# Write then rename: chain-co never reads half a word.
printf '%s\n' "$state" > "$ROLE_FILE.tmp" && mv -f "$ROLE_FILE.tmp" "$ROLE_FILE"
# Make it readable by chain-co's service user.
chmod 0644 "$ROLE_FILE"
