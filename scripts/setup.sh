#!/usr/bin/env bash
# Installs what building and testing the gateway needs on a fresh Debian 12 machine.
# Idempotent: every step checks first, so a second run takes a second or two.
# The eBPF toolchain follows what works on Debian 12 (see docs/toolchain.md): Debian's rustc-web
# (LLVM 22, ships library source so `-Z build-std=core` works for bpfel-unknown-none) and bpf-linker
# built against Debian's LLVM 22.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "setup: must run as root (it installs Debian packages and loads BPF programs)" >&2
  exit 1
fi

APT_PKGS=(rustc-web cargo-web rust-web-src llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev
  iproute2 ethtool iputils-ping libcap2-bin curl iperf3 bpftool tcpdump python3 procps nginx-light
  wrk nghttp2-client sslscan)
missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -d /usr/lib/rustlib/src/rust/library ]; then
  echo "setup: /usr/lib/rustlib/src/rust/library missing after installing rust-web-src" >&2
  exit 1
fi

if ! command -v bpf-linker >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/bpf-linker" ]; then
  log "building bpf-linker 0.13.0 against LLVM 22 (about a minute)"
  LLVM_PREFIX=/usr/lib/llvm-22 cargo install --locked bpf-linker --version 0.13.0 \
    --no-default-features --features llvm-22 >/dev/null
fi

mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
log "ready"
