#!/usr/bin/env python3
"""Boots Debian 12's unmodified kernel on `sevemu` (suite `linux`) with the busybox initramfs that
scripts/linux-assets.sh builds, and checks what the guest printed:

    boot_linux.py SEVEMU ASSETS_DIR KIND SMP [SEV]

KIND is `bzimage` or `pvh`; SEV is `sev` for an SEV guest, `sev-es` for an SEV-ES guest (policy
0x5: its registers encrypted in VMSAs that the launch measures, the APs started through the AP
jump table). The command line is an ordinary one
(`console=ttyS0`, nothing that works around sevemu). The guest's /init prints a marker, the
sha256 of a file (the expected value computed on the host by the asset script), and the number of
online CPUs, then powers off through ACPI S5: sevemu must exit with status 0. dmesg must show the
CPUs brought up and, for SEV, "Memory Encryption Features active: AMD SEV" (SEV-ES: "... AMD SEV
SEV-ES"). Exits 77 (skip) with a
clear line when the assets are missing.

An SEV guest is launched as its owner would have it: the platform's certificates exported with
sevemu-host, a launch session from sevemu-owner (policy 0x1, or 0x5 for SEV-ES), sevemu started paused (-S) with a
QMP socket; the launch measurement (query-sev-launch-measure) must verify with
`sevemu-owner measurement verify` for exactly this kernel, initrd, command line, -m and -smp (and
must not for another command line); then `cont` boots it. sevemu-owner and sevemu-host are found
beside sevemu in the build tree (tools/sevemu-owner/, tools/sevemu-host/), or in $SEVEMU_OWNER
and $SEVEMU_HOST.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

MEMORY = "512M"
APPEND = "console=ttyS0"


def sibling_tool(sevemu, name, env):
    if os.environ.get(env):
        return os.environ[env]
    tools = os.path.dirname(os.path.dirname(os.path.abspath(sevemu)))
    return os.path.join(tools, name, name)


class Qmp:
    """A minimal QMP client over a Unix socket: one JSON object per line."""

    def __init__(self, path, proc):
        deadline = time.time() + 60
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"no QMP socket at {path} (sevemu exit status {proc.poll()})")
                time.sleep(0.05)
        self.sock.settimeout(600)
        self.file = self.sock.makefile("rb")
        self.events = []
        self.read()  # greeting
        self.execute("qmp_capabilities")

    def read(self):
        line = self.file.readline()
        if not line:
            return None
        return json.loads(line)

    def execute(self, command, arguments=None):
        msg = {"execute": command}
        if arguments is not None:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode())
        while True:
            r = self.read()
            if r is None:
                raise RuntimeError(f"QMP closed while waiting for the reply to {command}")
            if "event" in r:
                self.events.append(r)
                continue
            if "error" in r:
                raise RuntimeError(f"QMP {command}: {r['error']}")
            return r["return"]

    def drain(self):
        """Every event until sevemu closes the socket."""
        while True:
            try:
                r = self.read()
            except (OSError, ValueError):
                return
            if r is None:
                return
            if "event" in r:
                self.events.append(r)


def run(cmd, what):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"{what}: {' '.join(cmd)} exited {r.returncode}: {r.stderr.decode(errors='replace')}")
    return r


def sev_launch_and_verify(sevemu, cmd, tmp, kernel, initrd, smp, policy, failures):
    """Starts the SEV guest paused, verifies its launch measurement as the owner, continues it.
    Returns (returncode, sevemu's output)."""
    owner = sibling_tool(sevemu, "sevemu-owner", "SEVEMU_OWNER")
    host = sibling_tool(sevemu, "sevemu-host", "SEVEMU_HOST")
    for t in (owner, host):
        if not os.access(t, os.X_OK):
            raise RuntimeError(f"{t} is missing: build the tools (ninja) or set $SEVEMU_OWNER/$SEVEMU_HOST")
    platform = os.path.join(tmp, "platform")
    certs = os.path.join(tmp, "certs")
    name = os.path.join(tmp, "owner")
    run([host, "--platform", platform, "export", certs], "sevemu-host export")
    run([owner, "session", "--pdh", os.path.join(certs, "pdh.cert"), "--policy", str(policy), "--name", name],
        "sevemu-owner session")
    sock = os.path.join(tmp, "qmp.sock")
    cmd = cmd + ["-machine", "confidential-guest-support=sev0",
                 "-object", f"sev-guest,id=sev0,policy={policy:#x},cbitpos=51,reduced-phys-bits=1,"
                 f"dh-cert-file={name}_godh.b64,session-file={name}_session.b64",
                 "--platform", platform, "-S", "-qmp", f"unix:{sock},server=on,wait=off"]
    print("running:", " ".join(cmd), flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        qmp = Qmp(sock, proc)
        info = qmp.execute("query-sev")
        measurement = qmp.execute("query-sev-launch-measure")["data"]
        print(f"launch measurement {measurement} (api {info['api-major']}.{info['api-minor']} build {info['build-id']})")
        verify = [owner, "measurement", "verify", "--tik", name + "_tik.bin", "--measurement", measurement,
                  "--api-major", str(info["api-major"]), "--api-minor", str(info["api-minor"]),
                  "--build", str(info["build-id"]), "--policy", str(policy), "-m", MEMORY, "--smp", str(smp),
                  "--kernel", kernel, "--initrd", initrd, "--append", APPEND]
        ok = subprocess.run(verify, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
        print("sevemu-owner:", ok.stdout.decode(errors="replace").strip())
        if ok.returncode != 0 or b"measurement matches" not in ok.stdout:
            failures.append(f"the launch measurement does not verify with sevemu-owner (status {ok.returncode})")
        # Another command line is another launch: the owner must refuse the same measurement.
        other = verify[:-1] + [APPEND + " quiet"]
        if subprocess.run(other, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600).returncode != 1:
            failures.append("sevemu-owner accepted the measurement for another command line")
        qmp.execute("cont")
        qmp.drain()
        out, _ = proc.communicate(timeout=1500)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc.returncode, out


def main():
    sevemu, assets, kind, smp = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    mode = sys.argv[5] if len(sys.argv) > 5 else ""
    if mode not in ("", "sev", "sev-es"):
        print(f"boot_linux.py: unknown mode {mode!r} (sev or sev-es)")
        return 2
    sev = mode != ""
    policy = 0x5 if mode == "sev-es" else 0x1
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
        cmd = [sevemu, "-m", MEMORY, "-smp", str(smp), "-display", "none", "-no-reboot",
               "-serial", "file:" + serial, "-kernel", kernel, "-initrd", initrd, "-append", APPEND]
        failures = []
        if sev:
            returncode, stdout = sev_launch_and_verify(sevemu, cmd, tmp, kernel, initrd, smp, policy, failures)
        else:
            print("running:", " ".join(cmd), flush=True)
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=1500)
            returncode, stdout = r.returncode, r.stdout
        out = open(serial, errors="replace").read() if os.path.exists(serial) else ""
    print(out[-6000:])
    print("sevemu:", stdout.decode(errors="replace")[-2000:])
    def need(cond, what):
        if not cond:
            failures.append(what)
    need(returncode == 0, f"sevemu exit status {returncode}, want 0 (ACPI S5 power-off)")
    need("SEVEMU-INIT-MARKER" in out, "the init marker")
    need(f"SEVEMU-SHA256 {want_hash}" in out, f"the file's sha256 {want_hash}")
    need(f"SEVEMU-CPUS {smp}" in out, f"{smp} CPU(s) online in userspace")
    need("reboot: Power down" in out, "'reboot: Power down'")
    need(f"smp: Brought up 1 node, {smp} CPU" in out, f"'smp: Brought up 1 node, {smp} CPU(s)'")
    need("Kernel panic" not in out, "no kernel panic")
    if mode == "sev":
        need("Memory Encryption Features active: AMD SEV" in out, "'Memory Encryption Features active: AMD SEV'")
        need("SEV-ES" not in out.split("Memory Encryption Features active:")[-1].split("\n")[0], "no SEV-ES without ES")
    if mode == "sev-es":
        need("Memory Encryption Features active: AMD SEV SEV-ES" in out,
             "'Memory Encryption Features active: AMD SEV SEV-ES'")
    for f in failures:
        print("FAIL:", f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
