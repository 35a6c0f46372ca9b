#!/bin/sh
# keepalived's check: is this host fit to hold the VIP?
# Exit 0 when chain-co says it is healthy (GET /healthz is 200: a probe round completed
# recently, a primary is published, the last nginx apply worked) and nginx's master runs.
# Fast and bounded: keepalived also kills it after `timeout`.
#
# Settings (environment, or edit the defaults):
#   CHAIN_CO_URL    chain-co's status API            (default http://127.0.0.1:9797)
#   NGINX_PID_FILE  nginx's pid file                 (default /run/nginx.pid)
#   CHAIN_CO        the chain-co binary              (default chain-co on PATH)
set -u
CHAIN_CO_URL=${CHAIN_CO_URL:-http://127.0.0.1:9797}
NGINX_PID_FILE=${NGINX_PID_FILE:-/run/nginx.pid}
CHAIN_CO=${CHAIN_CO:-chain-co}

# chain-co's own verdict, bounded to 1 s.
"$CHAIN_CO" health --url "$CHAIN_CO_URL" --timeout 1s >/dev/null 2>&1 || exit 1

# nginx's master must exist: a dead nginx cannot carry the VIP's traffic.
pid=$(cat "$NGINX_PID_FILE" 2>/dev/null) || exit 1
[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || exit 1
exit 0
