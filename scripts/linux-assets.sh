#!/usr/bin/env bash
# Test assets for the `linux` meson suite (tests/emulator/linux_boot_test.cpp and the boot tests):
# Debian 12's own kernel and a 64-bit busybox initramfs, made from two Debian packages fetched
# with `apt-get download` (no other download). Everything is cached in BUILD_DIR/linux-assets,
# so a re-run is offline and does nothing.
#
#   BUILD_DIR/linux-assets/bzImage          /boot/vmlinuz-* of linux-image-6.1.0-*-amd64
#   BUILD_DIR/linux-assets/vmlinux          the ELF64 kernel inside it (decompressed payload;
#                                           has the Xen PVH note, XEN_ELFNOTE_PHYS32_ENTRY)
#   BUILD_DIR/linux-assets/initramfs.cpio.gz  cpio newc, gzip: busybox-static + /init + /data.bin
#   BUILD_DIR/linux-assets/data.sha256      the expected sha256 of /data.bin, computed here
#   BUILD_DIR/linux-assets/kernel-version   e.g. 6.1.0-57-amd64
#   BUILD_DIR/linux-assets/facts            known answers for the tests, read by Python here (not
#                                           by sevemu): setup header fields and the PVH entry
#
# /init prints "SEVEMU-INIT-MARKER", then "SEVEMU-SHA256 <hash>" of /data.bin, then powers off
# with `poweroff -f` (the ACPI S5 path). Exits non-zero with one clear line on any failure.
set -euo pipefail
build=${BUILD_DIR:-build}
out="$build/linux-assets"
mkdir -p "$out/debs"
out=$(cd "$out" && pwd)
die() { echo "linux-assets: $*" >&2; exit 1; }

if [ -s "$out/bzImage" ] && [ -s "$out/vmlinux" ] && [ -s "$out/initramfs.cpio.gz" ] && [ -s "$out/data.sha256" ] && [ -s "$out/facts" ]; then
  exit 0
fi
for t in apt-get apt-cache dpkg-deb python3 sha256sum; do
  command -v "$t" >/dev/null || die "needs $t"
done

# 1. The two packages. linux-image-amd64 is a metapackage: the kernel is in the versioned
#    package it depends on.
cd "$out/debs"
# A cached .deb is used as it is (offline); only a missing one is resolved and downloaded.
if ! ls linux-image-[0-9]*-amd64_*.deb >/dev/null 2>&1; then
  kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [ -n "$kpkg" ] || die "cannot resolve the kernel package linux-image-amd64 depends on (apt-get update?)"
  apt-get download "$kpkg" || die "apt-get download $kpkg failed"
fi
ls busybox-static_*.deb >/dev/null 2>&1 || apt-get download busybox-static || die "apt-get download busybox-static failed"
kdeb=$(ls linux-image-[0-9]*-amd64_*.deb | head -1)
bdeb=$(ls busybox-static_*.deb | head -1)

# 2. The bzImage.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg-deb -x "$kdeb" "$work/k"
vmlinuz=$(ls "$work"/k/boot/vmlinuz-* | head -1)
[ -f "$vmlinuz" ] || die "$kdeb has no /boot/vmlinuz-*"
basename "$vmlinuz" | sed 's/^vmlinuz-//' > "$work/kernel-version"

# 3. The vmlinux ELF inside it: the payload (arch/x86/boot/compressed, payload_offset at 0x248
#    of the setup header, relative to the protected-mode code) is compressed with one of the
#    kernel's methods; try each magic in turn (as the kernel's scripts/extract-vmlinux does)
#    and keep the first candidate that decompresses to an ELF file.
python3 - "$vmlinuz" "$work/vmlinux" <<'PY'
import struct, subprocess, sys
img = open(sys.argv[1], 'rb').read()
setup_sects = img[0x1F1] or 4
pm = (setup_sects + 1) * 512
poff, plen = struct.unpack_from('<II', img, 0x248)
payload = img[pm + poff: pm + poff + plen]
tools = [(b'\xfd7zXZ\x00', ['xz', '-dc']), (b'\x28\xb5\x2f\xfd', ['zstd', '-dcq']),
         (b'\x1f\x8b\x08', ['gzip', '-dc']), (b'\x02\x21\x4c\x18', ['lz4', '-dc'])]
for magic, cmd in tools:
    if payload.startswith(magic):
        r = subprocess.run(cmd, input=payload, capture_output=True)
        if r.stdout[:4] == b'\x7fELF':
            open(sys.argv[2], 'wb').write(r.stdout)
            sys.exit(0)
for magic, cmd in tools:  # fall back to a scan of the whole image
    at = img.find(magic)
    while at >= 0:
        r = subprocess.run(cmd, input=img[at:], capture_output=True)
        if r.stdout[:4] == b'\x7fELF':
            open(sys.argv[2], 'wb').write(r.stdout)
            sys.exit(0)
        at = img.find(magic, at + 1)
sys.exit('linux-assets: no xz/zstd/gzip/lz4 payload in the bzImage decompresses to an ELF file')
PY
# The PVH note: an ELF note of name "Xen", type 18 (XEN_ELFNOTE_PHYS32_ENTRY); its address and
# the bzImage's setup header fields go to `facts` (one "name value" a line, values in hex).
python3 - "$vmlinuz" >"$work/facts" <<'PY'
import struct, sys
f = open(sys.argv[1], 'rb').read()
print('version %x' % struct.unpack_from('<H', f, 0x206))
print('setup_sects %x' % (f[0x1F1] or 4))
print('loadflags %x' % f[0x211])
print('xloadflags %x' % struct.unpack_from('<H', f, 0x236))
print('init_size %x' % struct.unpack_from('<I', f, 0x260))
print('pref_address %x' % struct.unpack_from('<Q', f, 0x258))
print('kernel_alignment %x' % struct.unpack_from('<I', f, 0x230))
print('cmdline_size %x' % struct.unpack_from('<I', f, 0x238))
print('initrd_addr_max %x' % struct.unpack_from('<I', f, 0x22C))
print('header_end %x' % (0x202 + f[0x201]))
PY
python3 - "$work/vmlinux" >>"$work/facts" <<'PY'
import struct, sys
f = open(sys.argv[1], 'rb').read()
assert f[4] == 2, 'vmlinux is not ELF64'
phoff, = struct.unpack_from('<Q', f, 0x20)
phentsize, phnum = struct.unpack_from('<HH', f, 0x36)
for i in range(phnum):
    p_type, _, off, _, _, filesz = struct.unpack_from('<IIQQQQ', f, phoff + i * phentsize)
    if p_type != 4:
        continue
    at = off
    while at + 12 <= off + filesz:
        namesz, descsz, typ = struct.unpack_from('<III', f, at)
        name = f[at + 12: at + 12 + namesz]
        if name.rstrip(b'\0') == b'Xen' and typ == 18:
            d = at + 12 + ((namesz + 3) & ~3)
            print('pvh_entry %x' % int.from_bytes(f[d:d + descsz], 'little'))
            sys.exit(0)
        at += 12 + ((namesz + 3) & ~3) + ((descsz + 3) & ~3)
sys.exit('linux-assets: the vmlinux has no Xen PVH note (XEN_ELFNOTE_PHYS32_ENTRY)')
PY

# 4. The initramfs: busybox-static (64-bit, statically linked), an /init script and a file to
#    hash. cpio newc is written by a small Python writer (the cpio command is not in the
#    build dependencies); every file is owned by root, with a fixed mtime so the image is
#    reproducible.
dpkg-deb -x "$bdeb" "$work/b"
[ -x "$work/b/bin/busybox" ] || die "$bdeb has no /bin/busybox"
python3 - "$work/data.bin" <<'PY'
import hashlib, sys
# 1 MiB of deterministic bytes: SHA-256 in counter mode over a fixed seed.
out = bytearray()
i = 0
while len(out) < 1 << 20:
    out += hashlib.sha256(b'sevemu-linux-test-%d' % i).digest()
    i += 1
open(sys.argv[1], 'wb').write(out)
PY
sha256sum "$work/data.bin" | awk '{print $1}' > "$work/data.sha256"
cat > "$work/init" <<'SH'
#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo SEVEMU-INIT-MARKER
echo "SEVEMU-SHA256 $(/bin/busybox sha256sum /data.bin | /bin/busybox cut -d' ' -f1)"
echo "SEVEMU-CPUS $(/bin/busybox grep -c ^processor /proc/cpuinfo)"
/bin/busybox poweroff -f
SH
python3 - "$work/initramfs.cpio" "$work/b/bin/busybox" "$work/init" "$work/data.bin" <<'PY'
import sys
# cpio "newc" (SVR4 without CRC): Linux Documentation/driver-api/early-userspace/buffer-format.rst.
out = open(sys.argv[1], 'wb')
ino = [1]
def entry(name, mode, data=b'', nlink=1):
    name_b = name.encode() + b'\0'
    hdr = '070701' + ''.join('%08X' % v for v in (
        ino[0], mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name_b), 0))
    ino[0] += 1
    rec = hdr.encode() + name_b
    rec += b'\0' * (-len(rec) % 4)
    rec += data + b'\0' * (-len(data) % 4)
    out.write(rec)
for d in ('bin', 'sbin', 'proc', 'sys', 'dev'):
    entry(d, 0o040755, nlink=2)
entry('bin/busybox', 0o100755, open(sys.argv[2], 'rb').read())
for applet in ('sh', 'poweroff', 'sha256sum', 'mount', 'cat', 'echo'):
    entry('bin/' + applet, 0o120777, b'busybox')
entry('init', 0o100755, open(sys.argv[3], 'rb').read())
entry('data.bin', 0o100644, open(sys.argv[4], 'rb').read())
entry('TRAILER!!!', 0)
PY
gzip -9n "$work/initramfs.cpio"

mv "$work/kernel-version" "$out/kernel-version"
mv "$work/facts" "$out/facts"
mv "$work/data.sha256" "$out/data.sha256"
cp "$vmlinuz" "$out/bzImage.tmp" && mv "$out/bzImage.tmp" "$out/bzImage"
mv "$work/vmlinux" "$out/vmlinux"
mv "$work/initramfs.cpio.gz" "$out/initramfs.cpio.gz"
echo "linux-assets: $(cat "$out/kernel-version") bzImage, vmlinux and initramfs in $out"
