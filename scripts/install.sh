#!/usr/bin/env bash
# Installs crust on this node, as root: crustd, crust-monitor and crustctl in
# $PREFIX/bin (default /usr/local; crustd finds the monitor beside itself), the
# systemd unit crust.service, /etc/crust/crust.toml (empty: the defaults are built in) with its
# drop-in directory /etc/crust/crust.toml.d, and /etc/crictl.yaml pointing at crust.
# Files an operator may have edited (crust.toml, crictl.yaml) are never overwritten.
#
#   cargo build --release --bins && ./scripts/install.sh
#   systemctl daemon-reload && systemctl enable --now crust
#
# Environment: PREFIX (/usr/local), DESTDIR (staging root, empty = /), BIN_DIR (where
# the built binaries are; target/release), SYSTEMD_DIR (/etc/systemd/system).
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
BIN_DIR=${BIN_DIR:-target/release}
SYSTEMD_DIR=${SYSTEMD_DIR:-/etc/systemd/system}

for bin in crustd crust-monitor crustctl; do
    [ -x "$BIN_DIR/$bin" ] || {
        echo "install.sh: $BIN_DIR/$bin is missing: run 'cargo build --release --bins' first" >&2
        exit 1
    }
done

install -d -m 0755 "$DESTDIR$PREFIX/bin" "$DESTDIR$SYSTEMD_DIR" "$DESTDIR/etc/crust" \
    "$DESTDIR/etc/crust/crust.toml.d" "$DESTDIR$PREFIX/share/doc/crust"
for bin in crustd crust-monitor crustctl; do
    # Through a temporary name and a rename, so a running crustd's binary is replaced
    # rather than written over ("text file busy").
    install -m 0755 "$BIN_DIR/$bin" "$DESTDIR$PREFIX/bin/.$bin.new"
    mv -f "$DESTDIR$PREFIX/bin/.$bin.new" "$DESTDIR$PREFIX/bin/$bin"
    echo "installed $DESTDIR$PREFIX/bin/$bin"
done

sed "s|@PREFIX@|$PREFIX|g" packaging/crust.service > "$DESTDIR$SYSTEMD_DIR/.crust.service.new"
chmod 0644 "$DESTDIR$SYSTEMD_DIR/.crust.service.new"
mv -f "$DESTDIR$SYSTEMD_DIR/.crust.service.new" "$DESTDIR$SYSTEMD_DIR/crust.service"
echo "installed $DESTDIR$SYSTEMD_DIR/crust.service"

# Installs SRC at DEST unless DEST exists (an operator's file is never replaced).
keep_or_install() { # src dest
    local src=$1 dest=$2
    if [ -e "$dest" ]; then
        echo "kept $dest (exists)"
    else
        install -m 0644 "$src" "$dest.new"
        mv "$dest.new" "$dest"
        echo "installed $dest"
    fi
}
keep_or_install packaging/crust.toml "$DESTDIR/etc/crust/crust.toml"
keep_or_install packaging/crictl.yaml "$DESTDIR/etc/crictl.yaml"
install -m 0644 docs/*.md "$DESTDIR$PREFIX/share/doc/crust/"

cat <<MSG

Next steps:
  $PREFIX/bin/crustd config check /etc/crust/crust.toml
  $PREFIX/bin/crustd cni install-default   # a pod network, if /etc/cni/net.d has none
  systemctl daemon-reload && systemctl enable --now crust
kubelet: --container-runtime-endpoint=unix:///run/crust/crust.sock
  (with the systemd cgroup driver: cgroupDriver: systemd in the KubeletConfiguration
  and [cgroup] driver = "systemd" in a drop-in under /etc/crust/crust.toml.d/)
MSG
