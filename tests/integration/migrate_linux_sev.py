#!/usr/bin/env python3
"""Debian 12's kernel as an SEV guest migrated live between two sevemu processes while its
userspace works (suite `migration`):

    migrate_linux_sev.py SEVEMU SEVEMU_HOST ASSETS_DIR [POLICY]

(POLICY 0x5 makes it an SEV-ES guest: meson test migration-linux-sev-es; the VMSAs travel through
SEND/RECEIVE_UPDATE_VMSA and dmesg must say "SEV SEV-ES".)

The guest is the SEV vmlinux of the `linux-sev-pvh` test (entered at startup_64, policy 0x1) with
the busybox initramfs of scripts/linux-assets.sh, whose /init is replaced here by a loop: each
round copies /data.bin to a new file (so the guest keeps writing memory during the pre-copy),
prints "SEVEMU-ROUND <n> <sha256 of the copy>" and waits 0.1 s for a line on the console; the
line "stop" ends the loop and the guest powers off (ACPI S5).

The flow, as QEMU's SEV migration series drives it: the source boots the guest; once userspace
has printed its third round, the target is started with the same -object sev-guest on its own
platform and `-incoming tcp:127.0.0.1:0`; the source gets `migrate-set-sev-info` with the
target's PDH (its query-sev-capabilities) and chain (`sevemu-host export --full`), then `migrate`
through a proxy in this script that records the stream. Checked:
  - Linux enabled migration itself (KVM_FEATURE_MIGRATION_CONTROL -> MSR_KVM_MIGRATION_CONTROL):
    before migrate-set-sev-info query-migrate's only blocker is the missing certificates; the
    migration is accepted and completes with more than one pre-copy pass;
  - the source ends "postmigrate", its SEV state "sent", and `cont` is refused;
  - the stream's "sev-shared-regions" section lists the kernel's decrypted memory (its
    .bss..decrypted and its SWIOTLB bounce buffers, which Linux reports with KVM_HC_MAP_GPA_RANGE);
    every page sent in the clear lies in that list and every other page went as a
    SEND_UPDATE_DATA packet; the file's bytes never appear in the clear on the wire; the
    target (held with -S) holds in DRAM exactly the shared pages sent in the clear;
  - on the target the rounds go on with the next counter and the same sha256, which is computed
    here on the host; the console input "stop" reaches the guest through the migrated UART and
    the guest powers off cleanly (exit status 0).
Exits 77 (skip) with a clear line when the assets are missing.
"""
import base64
import gzip
import hashlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

from migration_relay import Proxy
from qmp_client import Qmp

MEMORY = "512M"
GUEST_RAM_BASE = 64 << 20  # SevRuntime::kGuestRamBase: an SEV guest's GPA 0 is this SPA
PAGE = 4096

INIT = b"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo SEVEMU-INIT-MARKER
i=0
while :; do
  i=$((i+1))
  /bin/busybox cat /data.bin > /copy-$i.bin
  /bin/busybox rm -f /copy-$((i-1)).bin
  echo "SEVEMU-ROUND $i $(/bin/busybox sha256sum /copy-$i.bin | /bin/busybox cut -d' ' -f1)"
  if read -t 0.1 line; then
    [ "$line" = stop ] && break
  fi
done
echo "SEVEMU-STOPPED $i"
/bin/busybox poweroff -f
"""


def cpio_entries(data):
    """The entries of a cpio "newc" archive (Linux Documentation/driver-api/early-userspace/
    buffer-format.rst): (name, mode, nlink, contents)."""
    out, at = [], 0
    while True:
        hdr = data[at:at + 110]
        if hdr[:6] != b"070701":
            raise RuntimeError(f"initramfs: no cpio newc header at {at}")
        f = [int(hdr[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        mode, nlink, size, namesize = f[1], f[4], f[6], f[11]
        name = data[at + 110:at + 110 + namesize - 1].decode()
        at = (at + 110 + namesize + 3) & ~3
        body = data[at:at + size]
        at = (at + size + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out.append((name, mode, nlink, body))


def cpio_write(entries):
    out = bytearray()
    for ino, (name, mode, nlink, body) in enumerate(entries + [("TRAILER!!!", 0, 1, b"")], 1):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join("%08X" % v for v in (ino, mode, 0, 0, nlink, 0, len(body), 0, 0, 0, 0, len(name_b), 0))
        out += hdr.encode() + name_b
        out += b"\0" * (-len(out) % 4)
        out += body + b"\0" * (-len(body) % 4)
    return bytes(out)


def loop_initramfs(src, dst):
    """The asset's initramfs with its /init replaced by the hashing loop (and the applets the loop
    uses); everything else (busybox, /data.bin) as it is."""
    entries = [e for e in cpio_entries(gzip.decompress(open(src, "rb").read())) if e[0] != "init"]
    entries.append(("init", 0o100755, 1, INIT))
    open(dst, "wb").write(gzip.compress(cpio_write(entries), mtime=0))
    return next(e[3] for e in entries if e[0] == "data.bin")


def parse_stream(data):
    """The live stream as README "The live-migration stream" and emulator/sev_migration.cpp
    describe it: per page the kind of its last copy, the passes, the shared-regions list."""
    if data[:16] != b"SEVEMU-SNAPSHOT\n":
        raise RuntimeError("the recorded stream has no SEVEMU-SNAPSHOT header")
    at, pages, clear, passes, shared, names = 24, {}, {}, set(), None, []
    while data[at] == 0x01:
        n = data[at + 1]
        name = data[at + 2:at + 2 + n].decode()
        _, length = struct.unpack_from("<IQ", data, at + 2 + n)
        body = data[at + 14 + n:at + 14 + n + length]
        at += 14 + n + length + 4
        names.append(name)
        if name == "ram-pages":
            pas, count = struct.unpack_from("<II", body, 0)
            passes.add(pas)
            p = 8
            for _ in range(count):
                spa, kind = struct.unpack_from("<QB", body, p)
                p += 9
                if kind == 1:
                    clear[spa] = body[p:p + PAGE]
                    p += PAGE
                elif kind >= 2:
                    p += 4 + struct.unpack_from("<I", body, p)[0]
                pages[spa] = kind
        elif name == "sev-shared-regions":
            count, = struct.unpack_from("<I", body, 0)
            shared = [struct.unpack_from("<QQ", body, 4 + 16 * i) for i in range(count)]
    if data[at] != 0xFF:
        raise RuntimeError(f"the recorded stream has no end record (byte {data[at]:#x} at {at})")
    return pages, clear, passes, shared, names


def target_info(host, plat, tmp):
    chain = os.path.join(tmp, "target-chain")
    subprocess.run([host, "--platform", plat, "export", "--full", chain], check=True, stdout=subprocess.DEVNULL)
    rd = lambda n: open(os.path.join(chain, n), "rb").read()
    return (base64.b64encode(rd("pek.cert") + rd("oca.cert") + rd("cek.cert")).decode(),
            base64.b64encode(rd("ask.cert") + rd("ark.cert")).decode())


def rounds(text):
    return [(int(n), h) for n, h in re.findall(r"SEVEMU-ROUND (\d+) ([0-9a-f]{64})\r?\n", text)]


def bss_end_phys(vmlinux):
    """The physical address where the vmlinux's .bss ends (its section header, placed through the
    program header that loads it)."""
    f = open(vmlinux, "rb").read()
    phoff, shoff = struct.unpack_from("<QQ", f, 0x20)
    phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from("<HHHHH", f, 0x36)
    sh = [struct.unpack_from("<IIQQQQ", f, shoff + i * shentsize) for i in range(shnum)]
    strtab = sh[shstrndx][4]
    for name, _, _, addr, _, size in sh:
        if f[strtab + name:f.index(b"\0", strtab + name)] == b".bss":
            end = addr + size
            for i in range(phnum):
                typ, _, _, vaddr, paddr, _, memsz = struct.unpack_from("<IIQQQQQ", f, phoff + i * phentsize)
                if typ == 1 and vaddr <= addr < vaddr + memsz:
                    return end - vaddr + paddr
    raise RuntimeError(f"{vmlinux}: no .bss in a loaded segment")


def main():
    sevemu, host, assets = sys.argv[1:4]
    policy = sys.argv[4] if len(sys.argv) > 4 else "0x1"
    kernel = os.path.join(assets, "vmlinux")
    initrd_src = os.path.join(assets, "initramfs.cpio.gz")
    for f in (kernel, initrd_src):
        if not os.path.isfile(f):
            print(f"SKIP: {f} is missing: run scripts/linux-assets.sh (make test does) to fetch Debian's kernel")
            return 77
    failures = []

    def need(cond, what):
        if not cond:
            failures.append(what)
        return cond

    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="sevemu-migrate-linux-sev-") as tmp:
        initrd = os.path.join(tmp, "initramfs-loop.cpio.gz")
        data = loop_initramfs(initrd_src, initrd)
        want_hash = hashlib.sha256(data).hexdigest()  # the known answer, computed here
        pa, pb = os.path.join(tmp, "plat-src"), os.path.join(tmp, "plat-dst")
        os.makedirs(pa)
        os.makedirs(pb)
        sev = ["-machine", "confidential-guest-support=sev0",
               "-object", f"sev-guest,id=sev0,policy={policy},cbitpos=51,reduced-phys-bits=1"]
        common = [sevemu, "-m", MEMORY, "-display", "none", "-no-reboot"] + sev
        src_serial = os.path.join(tmp, "src.txt")
        src = subprocess.Popen(common + ["--platform", pa, "-serial", "file:" + src_serial, "-kernel", kernel,
                                         "-initrd", initrd, "-append", "console=ttyS0",
                                         "-qmp", "unix:" + os.path.join(tmp, "src.sock") + ",server=on,wait=off"],
                               stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "src.err"), "w"))
        src_text = lambda: open(src_serial, errors="replace").read() if os.path.exists(src_serial) else ""
        dst, rc = None, None
        dst_out = bytearray()
        try:
            sq = Qmp(os.path.join(tmp, "src.sock"), src)
            deadline = time.time() + 300
            while len(rounds(src_text())) < 3:
                if time.time() > deadline or src.poll() is not None:
                    raise RuntimeError("the source's userspace never printed three rounds:\n" + src_text()[-3000:])
                time.sleep(0.1)
            boot_s = time.time() - t0
            need("Memory Encryption Features active: AMD SEV" in src_text(), "the source's guest runs as an SEV guest")
            if int(policy, 0) & 4:
                need("Memory Encryption Features active: AMD SEV SEV-ES" in src_text(), "the source's guest runs as an SEV-ES guest")
            need(sq.run("query-sev")["state"] == "running", "the source's SEV guest is running")

            # The target: same machine and policy, its own platform, waiting on a free port; held
            # with -S after the stream so that its shared pages can be read before the guest runs.
            dst = subprocess.Popen(common + ["--platform", pb, "-serial", "stdio", "-S", "-incoming", "tcp:127.0.0.1:0",
                                             "-qmp", "unix:" + os.path.join(tmp, "dst.sock") + ",server=on,wait=off"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=open(os.path.join(tmp, "dst.err"), "w"))
            reader = threading.Thread(target=lambda: [dst_out.extend(b) for b in iter(lambda: dst.stdout.read1(4096), b"")],
                                      daemon=True)
            reader.start()
            dq = Qmp(os.path.join(tmp, "dst.sock"), dst)
            port = int(dq.run("query-migrate")["socket-address"][0]["port"])
            # Linux enabled migration itself (it saw KVM_FEATURE_MIGRATION_CONTROL and wrote
            # KVM_MIGRATION_READY): the only blocker left is the target's certificates.
            blocked = sq.run("query-migrate").get("blocked-reasons", [])
            need(len(blocked) == 1 and "migrate-set-sev-info" in blocked[0],
                 f"before migrate-set-sev-info the only blocker is the missing certificates: {blocked}")
            cap = dq.run("query-sev-capabilities")  # the target's PDH, as QEMU's flow takes it
            plat_cert, amd_cert = target_info(host, pb, tmp)
            sq.run("migrate-set-sev-info", pdh=cap["pdh"], **{"plat-cert": plat_cert, "amd-cert": amd_cert})

            recorder = Proxy(port)
            before = rounds(src_text())
            r = sq.raw("migrate", uri=f"tcp:127.0.0.1:{recorder.port}")
            # A refusal naming KVM_MIGRATION_READY would mean the kernel never enabled migration.
            if not need(r == {"return": {}}, f"migrate accepted: {json.dumps(r)}"):
                raise RuntimeError("migrate refused")
            while True:
                info = sq.run("query-migrate")
                if info.get("status") in ("completed", "failed", "cancelled"):
                    break
                time.sleep(0.1)
            print("source query-migrate:", json.dumps(info))
            if not need(info.get("status") == "completed",
                        f"the migration completed (status {info.get('status')}, {info.get('error-desc', '')})"):
                raise RuntimeError("migration failed")
            ram = info.get("ram", {})
            need(ram.get("dirty-sync-count", 0) >= 2, "more than one pre-copy pass while the guest ran")
            need(sq.run("query-status")["status"] == "postmigrate", "the source ends in postmigrate")
            need(sq.run("query-sev")["state"] == "sent", "the source's SEV guest is SENT (SEND_FINISH)")
            c = sq.raw("cont")
            need("error" in c, f"cont on the SENT source refused ({json.dumps(c)})")
            wire = recorder.capture()
            pages, clear, passes, shared, _ = parse_stream(wire)
            shared = shared or []

            # The shared pages as the target's DRAM holds them before its guest runs: the bytes the
            # source sent in the clear, page for page.
            need(dq.run("query-sev")["state"] == "running", "the target's SEV guest is RUNNING (RECEIVE_FINISH)")
            differ = nonzero = 0
            for gfn, n in shared:
                dump = os.path.join(tmp, "shared.bin")
                dq.run("pmemsave", val=gfn * PAGE, size=n * PAGE, filename=dump)
                got = open(dump, "rb").read()
                for k in range(n):
                    sent = clear.get(GUEST_RAM_BASE + (gfn + k) * PAGE)
                    mine = got[k * PAGE:(k + 1) * PAGE]
                    differ += sent != mine
                    nonzero += mine.count(0) != PAGE
            need(differ == 0, f"the target's shared pages are the ones sent in the clear ({differ} differ)")
            need(nonzero > 0, "some shared page carries data (not only zeros)")
            dq.run("cont")

            # The target goes on: at least three more rounds, then "stop" on its console.
            deadline = time.time() + 300
            while len(rounds(dst_out.decode(errors="replace"))) < 3:
                if time.time() > deadline or dst.poll() is not None:
                    raise RuntimeError("the target's guest printed no three rounds")
                time.sleep(0.1)
            dst.stdin.write(b"stop\n")
            dst.stdin.flush()
            rc = dst.wait(timeout=300)
            reader.join(30)
            sq.run("quit")
            src.wait(timeout=60)
        finally:
            for p in (src, dst):
                if p is not None and p.poll() is None:
                    p.kill()
            for name in ("src.err", "dst.err"):
                if (failures or rc is None) and os.path.exists(os.path.join(tmp, name)):
                    print(f"--- {name}:", open(os.path.join(tmp, name), errors="replace").read()[-2000:])
        src_out, dst_text = src_text(), dst_out.decode(errors="replace")
    print("source console (tail):\n" + src_out[-1200:])
    print("target console:\n" + dst_text[-3000:])

    # The rounds: numbered 1, 2, 3, ... without a gap across the two consoles (a line cut by the
    # migration is joined), every one with the host's sha256.
    all_rounds = rounds(src_out + dst_text)
    on_dst = rounds(dst_text)
    need([n for n, _ in all_rounds] == list(range(1, len(all_rounds) + 1)),
         f"the rounds go on without a gap: {[n for n, _ in all_rounds]}")
    need(all(h == want_hash for _, h in all_rounds), f"every round's sha256 is the host's {want_hash}")
    need(len(on_dst) >= 3 and on_dst[0][0] > len(before), f"the target printed the rounds after the source's "
         f"{len(before)} ({[n for n, _ in on_dst]})")
    need(f"SEVEMU-STOPPED {all_rounds[-1][0] if all_rounds else -1}" in dst_text,
         "the console's 'stop' reached the guest on the target")
    need("reboot: Power down" in dst_text, "'reboot: Power down' on the target")
    need(rc == 0, f"target exit status {rc}, want 0 (ACPI S5 power-off)")
    need("Kernel panic" not in src_out + dst_text and "BUG:" not in dst_text, "no kernel panic or BUG")

    # The stream: every page of guest RAM, the shared ones in the clear and only those.
    shared_gfns = set()
    for gfn, n in shared:
        shared_gfns.update(range(gfn, gfn + n))
    packets = [spa for spa, k in pages.items() if k == 2]
    print(f"stream: {len(wire)} bytes, passes {sorted(passes)}, {len(packets)} pages as SEND_UPDATE_DATA packets, "
          f"{len(clear)} in the clear ({nonzero} of them not zero); shared regions (gfn, pages): "
          + ", ".join(f"({g:#x}, {n})" for g, n in shared))
    need(len(pages) == int(MEMORY[:-1]) << 8, f"every page of guest RAM was sent ({len(pages)})")
    need(set(pages) == set(clear) | set(packets), "every page went in the clear or as a packet")
    need({(s - GUEST_RAM_BASE) // PAGE for s in clear} == shared_gfns,
         "the pages sent in the clear are exactly the shared-regions list")
    for chunk in (data[i:i + 64] for i in range(0, len(data), 256 << 10)):
        need(chunk not in wire, "the file's bytes never appear in the clear on the wire")
    # The list holds what the kernel said it decrypted. Its SWIOTLB bounce buffers (dmesg
    # "software IO TLB: mapped [mem A-B]", kernel/dma/swiotlb.c; decrypted for an SEV guest,
    # arch/x86/mm/mem_encrypt_amd.c), and its .bss..decrypted (kvmclock's pvclock pages), which
    # kvm_init_platform (arch/x86/kernel/kvm.c) reports before it writes KVM_MIGRATION_READY:
    # the last 2 MiB of .bss (vmlinux.lds.S BSS_DECRYPTED, PMD-aligned), less the part freed
    # at the end of the boot (dmesg "Freeing unused decrypted memory: NK").
    m = re.search(r"software IO TLB: mapped \[mem 0x([0-9a-f]+)-0x([0-9a-f]+)\]", src_out)
    if need(m, "the kernel's SWIOTLB line in dmesg"):
        a, b = int(m.group(1), 16), int(m.group(2), 16) + 1
        need((a // PAGE, (b - a) // PAGE) in shared, f"the SWIOTLB [{a:#x}, {b:#x}) is one shared region")
    m = re.search(r"Freeing unused decrypted memory: (\d+)K", src_out)
    if need(m, "the kernel's 'Freeing unused decrypted memory' line"):
        start = bss_end_phys(kernel) - (2 << 20)
        used = ((2 << 20) - int(m.group(1)) * 1024) // PAGE
        need((start // PAGE, used) in shared, f".bss..decrypted's {used} used pages at {start:#x} are a shared region")

    print(f"boot to the third round {boot_s:.1f} s; migration {info.get('total-time')} ms, downtime "
          f"{info.get('downtime')} ms, {ram.get('dirty-sync-count')} passes, {ram.get('transferred')} bytes; "
          f"whole test {time.time() - t0:.1f} s")
    for f in failures:
        print("FAIL:", f)
    if not failures:
        print(f"PASS: Debian's kernel as an {'SEV-ES' if int(policy, 0) & 4 else 'SEV'} guest migrated while hashing; rounds 1..{all_rounds[-1][0]} "
              f"(the target's from {on_dst[0][0]}) all {want_hash}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
