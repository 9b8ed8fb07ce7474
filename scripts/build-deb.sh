#!/usr/bin/env bash
# Builds crust's Debian package (crust_<version>_<arch>.deb) with cargo-deb from the
# [package.metadata.deb] of server/Cargo.toml: crustd, crust-monitor and crustctl in
# /usr/bin, crust.service in /lib/systemd/system, /etc/crust/crust.toml (a conffile),
# docs and an example crictl.yaml in /usr/share/doc/crust.
#
#   ./scripts/build-deb.sh                  # release build; the .deb in target/debian/
#   PROFILE=dev ./scripts/build-deb.sh      # the debug binaries (what the tests package)
#
# Needs cargo-deb: cargo install cargo-deb --locked --version 3.8.0
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-release}
command -v cargo-deb >/dev/null || {
    echo "build-deb.sh: cargo-deb is missing: cargo install cargo-deb --locked --version 3.8.0" >&2
    exit 1
}
# The unit in the package is install.sh's with PREFIX=/usr; a stale copy fails here.
expected=$(sed "s|@PREFIX@|/usr|g" packaging/crust.service | sed 1,2d)
if [ "$expected" != "$(sed 1,2d packaging/debian/crust.service)" ]; then
    echo "build-deb.sh: packaging/debian/crust.service differs from packaging/crust.service with PREFIX=/usr" >&2
    exit 1
fi
cargo build --locked --profile "$PROFILE" -p crust-server -p crust-runtime -p crust-ctl --bins
cargo deb --locked -p crust-server --no-build --profile "$PROFILE" "$@"
