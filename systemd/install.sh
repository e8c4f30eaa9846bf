#!/bin/sh
# `make install`: the package in its own venv under PREFIX, the systemd unit, the config (only
# if absent) and the system user. With DESTDIR set (packaging, tests) nothing outside DESTDIR
# is touched: no user is created and systemctl is not called.
set -eu
: "${PYTHON:=python3}" "${PREFIX:=/opt/availmon}" "${DESTDIR:=}" "${SYSCONFDIR:=/etc/availmon}"
: "${UNITDIR:=/etc/systemd/system}"
here=$(cd "$(dirname "$0")/.." && pwd)

root="$DESTDIR$PREFIX"
mkdir -p "$root" "$DESTDIR$SYSCONFDIR" "$DESTDIR$UNITDIR" "$root/share/doc/availmon"
# The venv is built where it will run; with DESTDIR the interpreter path inside it points
# at PREFIX, which is what the installed unit executes.
# an existing venv is reused: re-running make install upgrades the package in place
[ -x "$root/bin/python" ] || "$PYTHON" -m venv "$root"
"$root/bin/python" -m pip install --quiet --upgrade pip
# setuptools builds in the checkout's build/ and ships whatever an earlier build left there
# (a module since removed, a subpackage missing from pyproject.toml): build from a clean one
rm -rf "$here/build"
"$root/bin/python" -m pip install --quiet "$here"
if [ -n "$DESTDIR" ]; then
    # scripts carry the build path in their shebang; point them at the final location
    for script in "$root"/bin/*; do
        [ -f "$script" ] || continue
        sed -i "1s|^#!$root/|#!$PREFIX/|" "$script" 2>/dev/null || true
    done
fi
sed "s|@PREFIX@|$PREFIX|g" "$here/systemd/availmon.service" > "$DESTDIR$UNITDIR/availmon.service"
chmod 0644 "$DESTDIR$UNITDIR/availmon.service"
cp "$here/README.md" "$root/share/doc/availmon/README.md"
if [ ! -e "$DESTDIR$SYSCONFDIR/config.toml" ]; then
    # the example's relative state_dir is overridden by the unit's environment
    install -m 0640 "$here/config.example.toml" "$DESTDIR$SYSCONFDIR/config.toml"
    echo "installed $SYSCONFDIR/config.toml from config.example.toml"
else
    echo "kept existing $SYSCONFDIR/config.toml"
fi

if [ -z "$DESTDIR" ]; then
    if ! getent passwd availmon >/dev/null; then
        useradd --system --home-dir /var/lib/availmon --no-create-home \
            --shell /usr/sbin/nologin availmon
    fi
    chgrp availmon "$SYSCONFDIR/config.toml"
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        echo "next: availmon migrate, then systemctl enable --now availmon (see README)"
    fi
fi
echo "availmon installed under $PREFIX"
