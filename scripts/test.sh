#!/usr/bin/env bash
# The whole test suite, on a fresh Debian bookworm machine, as root: installs the Debian
# packages the tests drive, then runs unit, integration and e2e tests. CI (.ci/run) runs
# exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
export PATH="$HOME/.cargo/bin:$PATH"

[ "$(id -u)" = 0 ] || { echo "scripts/test.sh: run as root (namespaces, mounts, cgroups)" >&2; exit 1; }

# containernetworking-plugins: the real CNI plugins (/usr/lib/cni) the network tests use.
# iproute2, iptables: what those plugins and the netns tests drive.
# docker-registry: the real OCI registry the image e2e tests push to and pull from;
# busybox-static: the test images' content; apache2-utils: htpasswd for registry auth.
# runc: the OCI runtime the `oci` runtime handler tests drive (they fail without it).
# dpkg-dev: dpkg-shlibdeps, which cargo-deb computes the package's Depends with.
# containerd: another CRI runtime, which crustctl pull must fall back to PullImage on
# (e2e/tests/pull_progress.rs; the benchmarks' reference runtime too). `script`
# (bsdutils, Essential) gives the progress-bar test its terminal. libc6-dev: libc.a, which
# crust-monitor is linked with (statically, see runtime/build.rs).
apt-get update
apt-get install -y --no-install-recommends containernetworking-plugins iproute2 iptables \
    docker-registry busybox-static apache2-utils runc dpkg-dev containerd libc6-dev

# cargo-deb builds the Debian package e2e/tests/deb_package.rs checks (about 1.5 min
# to build here; that test fails under CI=true without it).
if ! cargo deb --version 2>/dev/null | grep -q '3\.8\.0'; then
    cargo install cargo-deb --locked --version 3.8.0
fi

# The guest node (e2e/src/guest.rs, e2e/guest/vm.sh): qemu boots a Debian bookworm guest
# with systemd as PID 1 on pure cgroup v2 for the systemd driver, the v2 device filter
# and AppArmor tests; mmdebstrap builds its image from Debian's packages (once, cached
# under /var/tmp/crust-guest). bookworm's qemu-system-x86 needs its own qemu-utils, so
# a newer one (from backports) is replaced by the matching version.
QEMU_VERSION=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
apt-get install -y --no-install-recommends --allow-downgrades \
    "qemu-system-x86=$QEMU_VERSION" "qemu-utils=$QEMU_VERSION" \
    mmdebstrap debootstrap socat e2fsprogs util-linux

# Python grpcio (PyPI): a gRPC C-core client for e2e/tests/grpc_clients.rs.
PY=$(command -v python3 || true)
if [ -z "$PY" ]; then
    apt-get install -y --no-install-recommends python3 python3-pip
    PY=/usr/bin/python3
fi
if ! "$PY" -c 'import grpc' 2>/dev/null; then
    "$PY" -m pip --version >/dev/null 2>&1 || apt-get install -y --no-install-recommends python3-pip
    "$PY" -m pip install --quiet grpcio==1.85.3 \
        || "$PY" -m pip install --quiet --break-system-packages grpcio==1.85.3
fi
export CRUST_TEST_PYTHON=$PY

cargo --version
cargo test --workspace --locked "$@"
