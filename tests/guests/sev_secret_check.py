#!/usr/bin/env python3
"""The SEV guest's secret parsing and SHA-256 against Python's hashlib.

Runs the guest's native twin (guest-sev-native) with SEV_GUEST_SECRET_PAGE pointing at secret
pages built here: valid ones of several lengths (block boundaries of SHA-256 included) and invalid
ones (bad magic, length over 4080), and checks the 'secret:' line of each run.

usage: sev_secret_check.py GUEST_SEV_NATIVE
"""
import hashlib
import os
import subprocess
import sys
import tempfile

PAGE = 4096
MAX = PAGE - 16


def page(magic, length, payload):
    body = magic + length.to_bytes(4, "little") + b"\0\0\0\0" + payload
    return body + b"\0" * (PAGE - len(body))


def main():
    native = sys.argv[1]
    cases = []
    for n in (0, 1, 3, 55, 56, 63, 64, 65, 119, 120, 1000, MAX):
        payload = bytes((i * 131 + n) & 0xFF for i in range(n))
        want = "secret: %d bytes, sha256 %s" % (n, hashlib.sha256(payload).hexdigest())
        cases.append((page(b"SEVEMUS1", n, payload), want))
    cases.append((page(b"SEVEMUS2", 16, bytes(16)), "secret: none"))
    cases.append((page(b"SEVEMUS1", MAX + 1, bytes(MAX)), "secret: none"))
    cases.append((page(b"SEVEMUS1", 0xFFFFFFFF, bytes(MAX)), "secret: none"))
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "secret.bin")
        for data, want in cases:
            with open(path, "wb") as f:
                f.write(data)
            env = dict(os.environ, SEV_GUEST_SECRET_PAGE=path)
            run = subprocess.run([native], env=env, capture_output=True, text=True)
            lines = [l for l in run.stdout.splitlines() if l.startswith("secret:")]
            if run.returncode != 0 or lines != [want]:
                print("FAIL: want %r, got %r (status %d)" % (want, lines, run.returncode))
                failed += 1
    print("%s: %d cases, %d failed" % ("PASS" if not failed else "FAIL", len(cases), failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
