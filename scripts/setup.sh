#!/usr/bin/env bash
# Idempotent setup for building and testing vardr on Debian 12 (root).
# Usage: scripts/setup.sh [build|vm|deb]...
#   build  nightly rust-src + bpf-linker (needed to build the BPF programs)
#   vm     qemu, virtme-ng and the pinned Debian kernels for the VM tier
#   deb    cargo-deb (cargo xtask deb builds the Debian package with it)
# Every step checks first and skips what is already there; a second run takes seconds.
set -euo pipefail

BPF_LINKER_VERSION=0.13.0
CARGO_DEB_VERSION=3.8.0
NIGHTLY=nightly
# Pinned Debian kernel packages for the VM tier (name -> version directory).
# The generic (not cloud) flavour: the cloud kernel lacks 9p, which virtme-ng needs.
VM_KERNELS=(
  "6.1:linux-image-6.1.0-56-amd64-unsigned"
  "6.12:linux-image-6.12.115+deb12-amd64-unsigned"
)
KERNEL_CACHE=${VARDR_KERNEL_CACHE:-/var/cache/vardr/kernels}
APPARMOR_DIR=/opt/vardr-apparmor

log() { printf '[setup] %s\n' "$*" >&2; }
need_root() { [ "$(id -u)" = 0 ] || { log "must run as root (installs packages)"; exit 1; }; }

apt_updated=0
apt_install() {
  local missing=()
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  need_root
  if [ $apt_updated = 0 ]; then log "apt-get update"; apt-get update -qq; apt_updated=1; fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

setup_build() {
  command -v rustup >/dev/null || { log "rustup not found: this machine needs the Rust toolchain (rustup)"; exit 1; }
  if ! rustup toolchain list | grep -q "^$NIGHTLY"; then
    log "installing $NIGHTLY toolchain"; rustup toolchain install "$NIGHTLY" --profile minimal
  fi
  if ! rustup component list --toolchain "$NIGHTLY" --installed 2>/dev/null | grep -q '^rust-src'; then
    log "adding rust-src to $NIGHTLY"; rustup component add rust-src --toolchain "$NIGHTLY"
  fi
  if command -v bpf-linker >/dev/null && bpf-linker --version 2>/dev/null | grep -q "$BPF_LINKER_VERSION"; then
    return 0
  fi
  # bpf-linker must link against the same LLVM major as the nightly rustc emits.
  local tc lib llvm major
  tc=$(rustc +"$NIGHTLY" --print sysroot)
  lib=$(ls "$tc"/lib/libLLVM.so.* "$tc"/lib/libLLVM-*.so 2>/dev/null | head -n1)
  [ -n "$lib" ] || { log "no libLLVM in $tc/lib"; exit 1; }
  major=$(rustc +"$NIGHTLY" -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
  llvm=/opt/rustllvm
  mkdir -p "$llvm/lib"
  for f in "$tc"/lib/libLLVM*; do ln -sf "$f" "$llvm/lib/$(basename "$f")"; done
  ln -sf "$lib" "$llvm/lib/libLLVM.so"
  log "building bpf-linker $BPF_LINKER_VERSION against LLVM $major (takes a few minutes)"
  LLVM_PREFIX=$llvm cargo install --locked bpf-linker --version "$BPF_LINKER_VERSION" \
    --no-default-features --features "llvm-$major" >&2
}

setup_deb() {
  apt_install dpkg-dev
  if command -v cargo-deb >/dev/null && cargo-deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    return 0
  fi
  log "installing cargo-deb $CARGO_DEB_VERSION (takes a few minutes)"
  cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION" >&2
}

setup_vm() {
  # wget: seed 003's block-443-for-wget example runs in the VM tier.
  apt_install qemu-system-x86 kmod busybox-static python3-pip wget
  if ! command -v vng >/dev/null; then
    log "pip install virtme-ng"
    pip install -q virtme-ng 2>/dev/null || pip install -q --break-system-packages virtme-ng
  fi
  mkdir -p "$KERNEL_CACHE"
  # virtme-ng --systemd (the packaging test) mounts the test kernel's
  # modules on /lib/modules, which must exist on the (read-only) host root.
  [ -d /lib/modules ] || { need_root; mkdir -p /lib/modules; }
  for entry in "${VM_KERNELS[@]}"; do
    local short=${entry%%:*} pkg=${entry#*:} dir
    dir="$KERNEL_CACHE/$short"
    if [ -f "$dir/.ready" ]; then continue; fi
    need_root
    rm -rf "$dir" && mkdir -p "$dir"
    if [ $apt_updated = 0 ]; then apt-get update -qq; apt_updated=1; fi
    log "downloading $pkg"
    (cd "$dir" && apt-get download -qq "$pkg")
    dpkg-deb -x "$dir"/*.deb "$dir/root"
    local ver
    ver=$(ls "$dir/root/lib/modules")
    depmod -b "$dir/root" "$ver"
    rm -f "$dir"/*.deb
    echo "$ver" > "$dir/.ready"
  done
  # AppArmor's parser for the benchmark's AppArmor peer in the VM boots:
  # unpacked, not installed (the package's service would load the
  # distribution's profiles into the kernel it runs on). Under /opt, which
  # the guests see (their /var/cache is a tmpfs).
  if [ ! -f "$APPARMOR_DIR/.ready" ]; then
    need_root
    rm -rf "$APPARMOR_DIR" && mkdir -p "$APPARMOR_DIR"
    if [ $apt_updated = 0 ]; then apt-get update -qq; apt_updated=1; fi
    log "downloading apparmor (its parser only)"
    (cd "$APPARMOR_DIR" && apt-get download -qq apparmor)
    dpkg-deb -x "$APPARMOR_DIR"/apparmor_*.deb "$APPARMOR_DIR/root"
    rm -f "$APPARMOR_DIR"/*.deb
    touch "$APPARMOR_DIR/.ready"
  fi
}

[ $# -gt 0 ] || set -- build
for what in "$@"; do
  case "$what" in
    build) setup_build; log "build tools ready: $NIGHTLY with rust-src, bpf-linker $BPF_LINKER_VERSION" ;;
    vm) setup_vm; log "VM tools ready: qemu, virtme-ng, kernels in $KERNEL_CACHE" ;;
    deb) setup_deb; log "packaging tools ready: cargo-deb $CARGO_DEB_VERSION" ;;
    *) log "unknown setup target: $what"; exit 2 ;;
  esac
done
