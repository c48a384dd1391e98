#!/usr/bin/env python3
"""Boots Debian 12's unmodified kernel on `sevemu` (suite `linux`) with the busybox initramfs that
scripts/linux-assets.sh builds, and checks what the guest printed:

    boot_linux.py SEVEMU ASSETS_DIR KIND SMP [SEV]

KIND is `bzimage` or `pvh`; SEV is `sev` for an SEV guest. The command line is an ordinary one
(`console=ttyS0`, nothing that works around sevemu). The guest's /init prints a marker, the
sha256 of a file (the expected value computed on the host by the asset script), and the number of
online CPUs, then powers off through ACPI S5: sevemu must exit with status 0. dmesg must show the
CPUs brought up and, for SEV, "Memory Encryption Features active: AMD SEV". Exits 77 (skip) with a
clear line when the assets are missing.
"""
import os
import subprocess
import sys
import tempfile


def main():
    sevemu, assets, kind, smp = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    sev = len(sys.argv) > 5 and sys.argv[5] == "sev"
    kernel = os.path.join(assets, "bzImage" if kind == "bzimage" else "vmlinux")
    initrd = os.path.join(assets, "initramfs.cpio.gz")
    want_hash_file = os.path.join(assets, "data.sha256")
    for f in (kernel, initrd, want_hash_file):
        if not os.path.isfile(f):
            print(f"SKIP: {f} is missing: run scripts/linux-assets.sh (make test does) to fetch Debian's kernel")
            return 77
    want_hash = open(want_hash_file).read().split()[0]
    with tempfile.TemporaryDirectory() as tmp:
        serial = os.path.join(tmp, "serial.txt")
        cmd = [sevemu, "-m", "512M", "-smp", str(smp), "-display", "none", "-no-reboot",
               "-serial", "file:" + serial, "-kernel", kernel, "-initrd", initrd, "-append", "console=ttyS0"]
        if sev:
            cmd += ["-machine", "confidential-guest-support=sev0",
                    "-object", "sev-guest,id=sev0,cbitpos=51,reduced-phys-bits=1",
                    "--platform", os.path.join(tmp, "platform")]
        print("running:", " ".join(cmd), flush=True)
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1500)
        out = open(serial, errors="replace").read() if os.path.exists(serial) else ""
    print(out[-6000:])
    print("sevemu:", r.stdout.decode(errors="replace")[-2000:])
    failures = []
    def need(cond, what):
        if not cond:
            failures.append(what)
    need(r.returncode == 0, f"sevemu exit status {r.returncode}, want 0 (ACPI S5 power-off)")
    need("SEVEMU-INIT-MARKER" in out, "the init marker")
    need(f"SEVEMU-SHA256 {want_hash}" in out, f"the file's sha256 {want_hash}")
    need(f"SEVEMU-CPUS {smp}" in out, f"{smp} CPU(s) online in userspace")
    need("reboot: Power down" in out, "'reboot: Power down'")
    need(f"smp: Brought up 1 node, {smp} CPU" in out, f"'smp: Brought up 1 node, {smp} CPU(s)'")
    need("Kernel panic" not in out, "no kernel panic")
    if sev:
        need("Memory Encryption Features active: AMD SEV" in out, "'Memory Encryption Features active: AMD SEV'")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
