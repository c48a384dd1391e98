#!/usr/bin/env bash
# Installs the Debian 12 packages sevemu builds and tests with, only those that are missing.
# Uses sudo when not root. Does nothing (and needs no network) when everything is present.
set -euo pipefail
pkgs=(g++ meson ninja-build pkg-config cmake libssl-dev libboost-dev catch2 libcli11-dev
      nlohmann-json3-dev libzydis-dev libfmt-dev zlib1g-dev)
# make bench and make test: QEMU is the reference measured beside sevemu (bench) and the QMP
# conformance test's oracle (test; it skips visibly without it).
if [ "${1:-}" = "--bench" ] || [ "${1:-}" = "--test" ]; then pkgs+=(qemu-system-x86); fi
# make test: the Linux test assets (scripts/linux-assets.sh unpacks Debian packages with dpkg-deb,
# decompresses the kernel's payload, writes the initramfs with Python) and iasl, the independent
# disassembler the ACPI table tests check sevemu's tables with.
if [ "${1:-}" = "--test" ]; then pkgs+=(python3 xz-utils zstd acpica-tools); fi
# make fuzz: clang 14 with libFuzzer and the sanitizer runtimes, llvm-symbolizer for readable reports.
if [ "${1:-}" = "--fuzz" ]; then pkgs+=(clang-14 libclang-rt-14-dev llvm-14); fi
missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "sevemu: installing missing Debian packages: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
