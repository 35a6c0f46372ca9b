#!/usr/bin/env bash
# Installs the package CI built on this machine, checks it as an operator would, and removes it:
# nothing may be left but the conffile. Root; run after packaging/build-deb.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(ls -t target/debian/chain-co_*.deb | head -n 1)
echo "== installing $deb"
dpkg -i "$deb"
chain-co --version
getent passwd chain-co >/dev/null
test "$(stat -c %U /etc/nginx/chain-co)" = chain-co
test "$(stat -c %a /etc/chain-co/chain-co.toml)" = 640
for f in /usr/share/bash-completion/completions/chain-co /usr/share/zsh/vendor-completions/_chain-co \
         /usr/share/fish/vendor_completions.d/chain-co.fish /usr/share/man/man1/chain-co.1.gz \
         /usr/lib/chain-co/check-chain-co.sh /usr/lib/chain-co/notify-role.sh \
         /lib/systemd/system/chain-co.service /lib/systemd/system/nginx.service.d/chain-co.conf; do
    test -e "$f" || { echo "missing $f"; exit 1; }
done
echo "== validate the installed example"
chain-co validate -c /etc/chain-co/chain-co.toml
if command -v systemd-analyze >/dev/null; then
    echo "== systemd-analyze verify"
    systemd-analyze verify /lib/systemd/system/chain-co.service
fi
files=$(dpkg -L chain-co | sort)
echo "== removing"
dpkg -r chain-co
left=""
for f in $files; do
    if [ -f "$f" ] && [ "$f" != /etc/chain-co/chain-co.toml ]; then left="$left $f"; fi
done
if [ -n "$left" ]; then echo "left behind after removal:$left"; exit 1; fi
test -f /etc/chain-co/chain-co.toml
dpkg --purge chain-co >/dev/null
echo "package: installed, validated, verified, removed cleanly"
