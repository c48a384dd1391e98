#!/usr/bin/env python3
"""Writes the seed corpus of the `snapshot` fuzz harness (tests/fuzz/corpus/snapshot): real
snapshots of bundled test guests, taken the way a user takes one (QMP replay-break to stop at an
instruction count, then migrate to file:), with 2 MiB of RAM so that they stay small (zero pages
are not in the stream). The fuzz harness loads them into a machine of the same shape.

    scripts/gen-snapshot-corpus.py [BUILD_DIR] [OUT_DIR]

BUILD_DIR defaults to build, OUT_DIR to tests/fuzz/corpus/snapshot.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

build = sys.argv[1] if len(sys.argv) > 1 else "build"
out_dir = sys.argv[2] if len(sys.argv) > 2 else "tests/fuzz/corpus/snapshot"
sevemu = os.path.join(build, "tools/sevemu/sevemu")
guests = os.path.join(build, "tests/guests")

# (guest, instruction counts): integer work, interrupts (PIC/PIT/UART), SSE.
POINTS = [("irq", [5000, 20000]), ("hash", [1000, 200000]), ("fp", [300000])]


class Qmp:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        for _ in range(200):
            try:
                self.sock.connect(path)
                break
            except OSError:
                time.sleep(0.025)
        else:
            raise SystemExit("gen-snapshot-corpus: cannot connect to " + path)
        self.buf = b""
        self.line()
        self.cmd("qmp_capabilities")

    def line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(4096)
            if not data:
                raise SystemExit("gen-snapshot-corpus: sevemu closed the QMP socket")
            self.buf += data
        text, self.buf = self.buf.split(b"\r\n", 1)
        return json.loads(text)

    def cmd(self, name, **args):
        req = {"execute": name}
        if args:
            req["arguments"] = args
        self.sock.sendall(json.dumps(req).encode())
        while True:
            r = self.line()
            if "event" in r:
                continue
            if "error" in r:
                raise SystemExit("gen-snapshot-corpus: %s: %s" % (name, r["error"]["desc"]))
            return r["return"]


def snapshot(guest, icount, dest):
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "qmp.sock")
        proc = subprocess.Popen([sevemu, "-display", "none", "-serial", "none", "-m", "2", "-device",
                                 "isa-debug-exit,iobase=0xf4,iosize=0x04", "-S", "-kernel",
                                 os.path.join(guests, "guest-%s.elf" % guest), "-qmp",
                                 "unix:%s,server=on,wait=off" % sock])
        try:
            q = Qmp(sock)
            q.cmd("replay-break", icount=icount)
            q.cmd("cont")
            while q.cmd("query-status")["status"] != "paused":
                time.sleep(0.01)
            q.cmd("migrate", uri="file:" + dest)
            while q.cmd("query-migrate").get("status") not in ("completed", "failed"):
                time.sleep(0.01)
            if q.cmd("query-migrate")["status"] != "completed":
                raise SystemExit("gen-snapshot-corpus: migrate failed: %s" % q.cmd("query-migrate"))
            q.cmd("quit")
        finally:
            proc.wait(timeout=30)


os.makedirs(out_dir, exist_ok=True)
for guest, counts in POINTS:
    for icount in counts:
        dest = os.path.join(out_dir, "%s-%d" % (guest, icount))
        snapshot(guest, icount, dest)
        print("%s: %d bytes" % (dest, os.path.getsize(dest)))
