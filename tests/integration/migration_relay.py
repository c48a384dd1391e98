"""A recording relay for the migration tests: one connection on loopback forwarded to the target
both ways, the source-to-target bytes kept (the captured wire the tests search for plaintext), and
optionally one byte changed on its way (as the FlipProxy of tests/integration/migration_test.cpp
does). Shared by migrate_sev.py and migrate_linux_sev.py."""

import socket
import threading


class Proxy:
    """One connection on loopback forwarded to the target both ways; the source-to-target bytes
    are recorded, and the byte at offset flip_at (if given) is changed on its way (as the FlipProxy
    of tests/integration/migration_test.cpp does)."""

    def __init__(self, target_port, flip_at=None):
        self.ls = socket.socket()
        self.ls.bind(('127.0.0.1', 0))
        self.ls.listen(1)
        self.port = self.ls.getsockname()[1]
        self.target_port = int(target_port)
        self.flip_at = flip_at
        self.flipped = False
        self.data = bytearray()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def pump(self, a, b, record):
        try:
            while True:
                buf = a.recv(1 << 16)
                if not buf:
                    break
                if record:
                    if self.flip_at is not None and len(self.data) <= self.flip_at < len(self.data) + len(buf):
                        buf = bytearray(buf)
                        buf[self.flip_at - len(self.data)] ^= 0x10
                        self.flipped = True
                    self.data += buf
                b.sendall(buf)
        except OSError:
            pass
        self.shut_both(a, b)

    @staticmethod
    def shut_both(a, b):
        """Both directions of both sockets closed: the peers see the end of the stream."""
        for sock in (a, b):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def run(self):
        c, _ = self.ls.accept()
        t = socket.create_connection(('127.0.0.1', self.target_port))
        back = threading.Thread(target=self.pump, args=(t, c, False), daemon=True)
        back.start()
        self.pump(c, t, True)
        back.join(30)
        c.close()
        t.close()
        self.ls.close()

    def capture(self):
        self.thread.join(60)
        return bytes(self.data)
