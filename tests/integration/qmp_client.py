"""A QMP client for the migration tests (migrate_linux.py, migrate_linux_sev.py): connects to a
sevemu's QMP socket (waiting up to 60 s for it, or until `proc` has exited), negotiates
capabilities and runs commands; events are passed over."""

import json
import socket
import time


class Qmp:
    def __init__(self, path, proc=None):
        deadline = time.time() + 60
        while True:
            try:
                self.s = socket.socket(socket.AF_UNIX)
                self.s.connect(path)
                break
            except OSError:
                self.s.close()
                if (proc is not None and proc.poll() is not None) or time.time() > deadline:
                    status = proc.poll() if proc is not None else None
                    raise RuntimeError(f"no QMP socket at {path} (sevemu exit status {status})")
                time.sleep(0.05)
        self.f = self.s.makefile("rwb")
        self.f.readline()
        self.run("qmp_capabilities")

    def raw(self, cmd, **args):
        msg = {"execute": cmd}
        if args:
            msg["arguments"] = args
        self.f.write(json.dumps(msg).encode())
        self.f.flush()
        while True:
            line = self.f.readline()
            if not line:
                raise RuntimeError(f"QMP closed during {cmd}")
            r = json.loads(line)
            if "event" not in r:
                return r

    def run(self, cmd, **args):
        r = self.raw(cmd, **args)
        if "error" in r:
            raise RuntimeError(f"{cmd}: {r['error']}")
        return r["return"]

