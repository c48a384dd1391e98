#!/usr/bin/env python3
"""Debian 12's kernel (PVH vmlinux, the busybox initramfs of scripts/linux-assets.sh) migrated live
between two sevemu processes while it boots (suite `migration`):

    migrate_linux.py SEVEMU ASSETS_DIR

The source boots the kernel; once the kernel has printed its banner and gone on for a moment, QMP
`migrate tcp:` moves it to a target started with `-incoming tcp:127.0.0.1:0`. The target must
finish the boot and the guest's userspace must print its marker, the sha256 of its file (the value
computed on the host by the asset script) and power off (exit status 0); the source must end in
"postmigrate". Exits 77 (skip) with a clear line when the assets are missing.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

from qmp_client import Qmp


def main():
    sevemu, assets = sys.argv[1], sys.argv[2]
    kernel = os.path.join(assets, "vmlinux")
    initrd = os.path.join(assets, "initramfs.cpio.gz")
    want_hash_file = os.path.join(assets, "data.sha256")
    for f in (kernel, initrd, want_hash_file):
        if not os.path.isfile(f):
            print(f"SKIP: {f} is missing: run scripts/linux-assets.sh (make test does) to fetch Debian's kernel")
            return 77
    want_hash = open(want_hash_file).read().split()[0]
    failures = []

    def need(cond, what):
        if not cond:
            failures.append(what)

    with tempfile.TemporaryDirectory() as tmp:
        common = [sevemu, "-m", "512M", "-display", "none", "-no-reboot"]
        src_serial, dst_serial = os.path.join(tmp, "src.txt"), os.path.join(tmp, "dst.txt")
        dst = subprocess.Popen(common + ["-serial", "file:" + dst_serial, "-incoming", "tcp:127.0.0.1:0",
                                         "-qmp", "unix:" + os.path.join(tmp, "dst.sock") + ",server=on,wait=off"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        src = subprocess.Popen(common + ["-serial", "file:" + src_serial, "-kernel", kernel, "-initrd", initrd,
                                         "-append", "console=ttyS0",
                                         "-qmp", "unix:" + os.path.join(tmp, "src.sock") + ",server=on,wait=off"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            dq, sq = Qmp(os.path.join(tmp, "dst.sock")), Qmp(os.path.join(tmp, "src.sock"))
            port = dq.run("query-migrate")["socket-address"][0]["port"]
            sq.run("migrate-set-capabilities", capabilities=[{"capability": "events", "state": True}])
            # The kernel is booting: its banner is out, and it goes on for a moment.
            deadline = time.time() + 600
            while "Linux version" not in (open(src_serial, errors="replace").read() if os.path.exists(src_serial) else ""):
                if time.time() > deadline or src.poll() is not None:
                    raise RuntimeError("the source never printed the kernel banner")
                time.sleep(0.1)
            time.sleep(1.0)
            sq.run("migrate", uri=f"tcp:127.0.0.1:{port}")
            while True:
                info = sq.run("query-migrate")
                if info.get("status") in ("completed", "failed", "cancelled"):
                    break
                time.sleep(0.1)
            print("source query-migrate:", json.dumps(info))
            need(info.get("status") == "completed", f"the migration completed (status {info.get('status')}, "
                 f"{info.get('error-desc', '')})")
            need(info.get("ram", {}).get("dirty-sync-count", 0) >= 3, "at least one pre-copy pass after the first")
            need(sq.run("query-status")["status"] == "postmigrate", "the source ends in postmigrate")
            rc = dst.wait(timeout=1500)
            sq.run("quit")
            src.wait(timeout=60)
        finally:
            for p in (src, dst):
                if p.poll() is None:
                    p.kill()
        out = (open(src_serial, errors="replace").read() if os.path.exists(src_serial) else "") + \
              (open(dst_serial, errors="replace").read() if os.path.exists(dst_serial) else "")
        print(out[-4000:])
        print("target:", dst.stdout.read().decode(errors="replace")[-2000:])
    need(rc == 0, f"target exit status {rc}, want 0 (ACPI S5 power-off)")
    need("SEVEMU-INIT-MARKER" in out, "the init marker")
    need(f"SEVEMU-SHA256 {want_hash}" in out, f"the file's sha256 {want_hash}")
    need("reboot: Power down" in out, "'reboot: Power down'")
    need("Kernel panic" not in out, "no kernel panic")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
