#!/usr/bin/env python3
"""SEV live migration between two sevemu processes (suite 'migration'), as a user of QEMU's SEV
migration series drives it: the target (-incoming tcp:, its own platform directory) gives its PDH
(query-sev-capabilities); its chain comes from `sevemu-host export --full` on the target's
platform; the source gets them with migrate-set-sev-info and migrates while the SEV guest
(bench-memory-sev: it rewrites 4 MiB for seconds) computes. Checked: the target finishes with the
uninterrupted SEV run's output; the source ends SENT and refuses cont; and a NOSEND guest (policy
bit 3) is refused by the firmware's SEND_START, after which it runs on and finishes right.
The migration goes through a TCP proxy in this script that records the stream: the guest's array
(a deterministic PRNG sequence) is never on the wire in the clear, while the same search finds it
in a plain guest's stream. Faults: migrate_cancel of a bandwidth-limited migration (the source
runs on and migrates again to a second target), a byte flipped in the page packets (the target
refuses and never runs the guest; the source's guest finishes), and a guest paused with -S before
its first instruction (so before it wrote KVM_MIGRATION_READY) is refused with the exact QMP error.

With the argument `roots` it runs the platform-identity cases instead (meson test
migration-sev-roots): the source and the targets each have their own platform directory, so their
own chip key and CEK, PEK, PDH (the target's chain differs from the source's); a genuine target's
directory holds the same AMD roots as the source's (two chips of one generation: sevemu keeps its
test ARK and ASK per platform directory, DIR/roots/MODEL, QUIRKS.md), another target's holds roots
of its own (same key IDs, other keys). With the guest policy's SEV bit (bit 5, 0x20: SEV-KM API
55766 "Guest policy"; firmware/sev_api.h policy::SEV) the source's SEND_START validates
PDH <- PEK <- CEK <- ASK <- ARK and the ARK against its own root (AMD-ASPFW sev_mcmd.c
validate_platform, called from sev_mcmd_send_start only under SEV_GUEST_POLICY_SEV_FLAG): the
genuine target is accepted and the guest finishes there; the target under another root, and a chain
that claims the source's roots over another platform's CEK, are refused with the firmware's status
and the source's guest runs on. Without the SEV bit SEND_START reads only the PDH (AMD-ASPFW: the
chain is not even copied), so the very chain refused before is accepted and the guest migrates.

With the arguments `es ES_GUEST_ELF` it runs the SEV-ES cases (meson test migration-sev-es):
ES_GUEST_ELF (bench-memory linked as an SEV-ES guest) migrates with policy 0x5 while it computes
and finishes on the target with the uninterrupted SEV-ES run's output; its array is never on the
wire in the clear (the markers above), while its GHCB page (tests/guests/sev.h SEV_ES_GHCB_GPA,
outside the image), which the guest reported with KVM_HC_MAP_GPA_RANGE before it said it was
ready to migrate, is in the stream's "sev-shared-regions" list and travels in the clear: its
last copy is a kind-1 record holding a GHCB (protocol version 1 at 0xFFA, the exit code of a
request the guest makes at 0x390); its vCPUs' registers travel only as SEND_UPDATE_VMSA packets: the stream's "sev-vcpu0" section holds neither the
power-on PAT (0x0007040600070406, VMSA offset 0x268, which the guest never changes) nor any 8-byte
value inside the guest's executable segment (a RIP), while the same search finds both in the plain
SEV guest's section (the control); a byte flipped inside the VMSA packet, with the section's CRC
made right again (a tamperer's stream, not a transmission error), is refused by the target's
RECEIVE_UPDATE_VMSA with BAD_MEASUREMENT, the target never runs, the source's guest finishes.

usage: migrate_sev.py SEVEMU SEVEMU_HOST GUEST_ELF [roots | es ES_GUEST_ELF]
(the plain bench-memory.elf is taken from beside GUEST_ELF, bench-memory-sev.elf)
"""
import base64, json, os, shutil, socket, struct, subprocess, sys, tempfile, threading, time, zlib

from migration_relay import Proxy

SEVEMU, HOST, GUEST = sys.argv[1:4]
MODE = sys.argv[4] if len(sys.argv) > 4 else 'default'
ES_GUEST = sys.argv[5] if MODE == 'es' else None
PLAIN = GUEST.replace('-sev.elf', '.elf')
D = tempfile.mkdtemp(prefix='sevemu-migrate-sev-')
procs = []


def fail(msg):
    print('FAIL:', msg)
    for p in procs:
        p.kill()
    for f in sorted(os.listdir(D)):
        if f.endswith('.err') or f.endswith('.out'):
            print('---', f, open(os.path.join(D, f), errors='replace').read())
    sys.exit(1)


def qmp(path):
    for _ in range(600):
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            break
        except OSError:
            time.sleep(0.05)
    else:
        fail('no QMP socket ' + path)
    f = s.makefile('rw')
    f.readline()

    def cmd(name, **args):
        req = {'execute': name}
        if args:
            req['arguments'] = args
        f.write(json.dumps(req))
        f.flush()
        while True:
            line = f.readline()
            if not line:
                fail('QMP closed during ' + name)
            r = json.loads(line)
            if 'event' not in r:
                return r
    cmd('qmp_capabilities')
    return cmd


def start(name, extra, plat, policy):
    argv = [SEVEMU, '-display', 'none', '-serial', 'file:%s/%s.out' % (D, name), '-device',
            'isa-debug-exit,iobase=0xf4,iosize=0x04', '-m', '64',
            '-qmp', 'unix:%s/%s.sock,server=on,wait=off' % (D, name)] + extra
    if plat:  # else a plain guest
        argv += ['-machine', 'confidential-guest-support=sev0', '-object',
                 'sev-guest,id=sev0,policy=%s,cbitpos=51,reduced-phys-bits=1' % policy, '--platform', plat]
    p = subprocess.Popen(argv, stderr=open('%s/%s.err' % (D, name), 'w'))
    procs.append(p)
    return p, qmp('%s/%s.sock' % (D, name))


def read(name):
    return open(os.path.join(D, name), errors='replace').read()


def reference():
    plat = os.path.join(D, 'plat-ref')
    os.makedirs(plat)
    r = subprocess.run([SEVEMU, '-display', 'none', '-serial', 'file:%s/ref.out' % D, '-device',
                        'isa-debug-exit,iobase=0xf4,iosize=0x04', '-m', '64', '-machine',
                        'confidential-guest-support=sev0', '-object',
                        'sev-guest,id=sev0,policy=0x1,cbitpos=51,reduced-phys-bits=1', '--platform', plat,
                        '-kernel', GUEST], timeout=300)
    return read('ref.out'), r.returncode


def markers():
    """bench-memory's a[i] = guest_rand(&state), state 0x243F6A8885A308D3 (tests/guests/bench/memory.c,
    xorshift64* of tests/guests/guest.h): the odd i are never written again, so these 8-byte
    little-endian values stay in the guest's memory for the whole run. 64 of them, spread over the
    4 MiB array (i < 2^19)."""
    m = (1 << 64) - 1
    x, out = 0x243F6A8885A308D3, []
    for i in range(1 << 19):
        x ^= x >> 12
        x = (x ^ (x << 25)) & m
        x ^= x >> 27
        if i % 8192 == 1:
            out.append(struct.pack('<Q', (x * 0x2545F4914F6CDD1D) & m))
    return out


def export_full(plat, name):
    """`sevemu-host export --full`: the platform's PDH, PEK, OCA, the ASK-signed CEK, ASK and ARK."""
    chain = os.path.join(D, name + '-chain')
    subprocess.run([HOST, '--platform', plat, 'export', '--full', chain], check=True, stdout=subprocess.DEVNULL)
    return {n: open(os.path.join(chain, n + '.cert'), 'rb').read() for n in ('pdh', 'pek', 'oca', 'cek', 'ask', 'ark')}


def b64(data):
    return base64.b64encode(data).decode()


def target_info(plat, name):
    c = export_full(plat, name)
    return b64(c['pek'] + c['oca'] + c['cek']), b64(c['ask'] + c['ark'])


def wait_done(s):
    for _ in range(1200):
        q = s('query-migrate')['return']
        if q.get('status') in ('completed', 'failed', 'cancelled'):
            return q
        time.sleep(0.05)
    fail('migration did not end')


def migrate_to(s, info, port, what):
    """migrate-set-sev-info with `info`, then migrate toward `port` (both must be accepted); the
    migration's end as query-migrate gives it."""
    if s('migrate-set-sev-info', **info) != {'return': {}}:
        fail('migrate-set-sev-info (%s)' % what)
    if s('migrate', uri='tcp:127.0.0.1:%s' % port) != {'return': {}}:
        fail('migrate (%s)' % what)
    return wait_done(s)


def migrate_while_computing(ref_out, ref_status):
    pa, pb = os.path.join(D, 'plat-a'), os.path.join(D, 'plat-b')
    os.makedirs(pa)
    os.makedirs(pb)
    plat_cert, amd_cert = target_info(pb, 'b')
    tp, t = start('dst', ['-kernel', GUEST, '-incoming', 'tcp:127.0.0.1:0'], pb, '0x1')
    port = t('query-migrate')['return']['socket-address'][0]['port']
    cap = t('query-sev-capabilities')['return']
    sp, s = start('src', ['-kernel', GUEST], pa, '0x1')
    time.sleep(0.3)
    r = s('migrate', uri='tcp:127.0.0.1:' + port)
    if 'error' not in r or 'migrate-set-sev-info' not in r['error']['desc']:
        fail('migrate without the target\'s certificates: ' + json.dumps(r))
    r = s('migrate-set-sev-info', pdh=cap['pdh'], **{'plat-cert': 'not base64!', 'amd-cert': amd_cert})
    if 'error' not in r:
        fail('bad base64 accepted')
    r = s('migrate-set-sev-info', pdh=cap['pdh'], **{'plat-cert': plat_cert, 'amd-cert': amd_cert})
    if r != {'return': {}}:
        fail('migrate-set-sev-info: ' + json.dumps(r))
    if s('query-status')['return']['status'] != 'running':
        fail('the guest is not computing when the migration starts')
    proxy = Proxy(port)  # records the wire
    r = s('migrate', uri='tcp:127.0.0.1:%d' % proxy.port)
    if r != {'return': {}}:
        fail('migrate: ' + json.dumps(r))
    q = wait_done(s)
    if q['status'] != 'completed':
        fail('migration ' + json.dumps(q))
    if q['ram']['normal'] == 0:
        fail('no pages sent')
    wire = proxy.capture()
    if len(wire) < 4 << 20:
        fail('the recorded stream has only %d bytes' % len(wire))
    seen = [m.hex() for m in markers() if m in wire]
    if seen:
        fail('the SEV stream carries the guest\'s private plaintext: %s' % seen)
    sev = s('query-sev')['return']
    if sev['state'] != 'sent':
        fail('source SEV state ' + sev['state'])
    r = s('cont')
    if 'error' not in r or 'SEND_FINISH' not in r['error']['desc']:
        fail('cont on a SENT guest: ' + json.dumps(r))
    status = tp.wait(300)
    out = read('src.out') + read('dst.out')
    if out != ref_out or status != ref_status:
        fail('the migrated guest printed %r (status %d), the uninterrupted run %r (%d)' % (out, status, ref_out, ref_status))
    s('quit')
    sp.wait(30)
    print('PASS: SEV guest migrated while computing (%d pages through SEND_UPDATE_DATA, downtime %d ms) and '
          'finished on the target with the uninterrupted output' % (q['ram']['normal'], q['downtime']))
    print('PASS: none of %d known 8-byte values of the guest\'s private array in the %d recorded bytes of the '
          'stream' % (len(markers()), len(wire)))


def plain_stream_has_markers():
    """The control of the search: a plain guest's migration through the same proxy carries the array
    in the clear, and every marker is found."""
    if not os.path.exists(PLAIN):
        fail('no plain guest ' + PLAIN)
    tp, t = start('pdst', ['-kernel', PLAIN, '-incoming', 'tcp:127.0.0.1:0'], None, None)
    port = t('query-migrate')['return']['socket-address'][0]['port']
    sp, s = start('psrc', ['-kernel', PLAIN], None, None)
    time.sleep(0.3)
    proxy = Proxy(port)
    r = s('migrate', uri='tcp:127.0.0.1:%d' % proxy.port)
    if r != {'return': {}}:
        fail('plain migrate: ' + json.dumps(r))
    q = wait_done(s)
    if q['status'] != 'completed':
        fail('plain migration ' + json.dumps(q))
    wire = proxy.capture()
    missing = [m.hex() for m in markers() if m not in wire]
    if missing:
        fail('the plain stream (%d bytes) lacks %d of the markers: the search does not work' % (len(wire), len(missing)))
    for p in (sp, tp):
        p.kill()
        p.wait(30)
    print('PASS: all %d markers found in the plain guest\'s stream of %d bytes (the search works)'
          % (len(markers()), len(wire)))


def pair(tag):
    """A source (running the SEV guest) and a target (-incoming) with its own platform; the source
    has the target's PDH and chain."""
    pa, pb = os.path.join(D, 'plat-%s-src' % tag), os.path.join(D, 'plat-%s-dst' % tag)
    os.makedirs(pa)
    os.makedirs(pb)
    plat_cert, amd_cert = target_info(pb, tag)
    tp, t = start(tag + '-dst', ['-kernel', GUEST, '-incoming', 'tcp:127.0.0.1:0'], pb, '0x1')
    port = t('query-migrate')['return']['socket-address'][0]['port']
    cap = t('query-sev-capabilities')['return']
    return pa, tp, port, {'pdh': cap['pdh'], 'plat-cert': plat_cert, 'amd-cert': amd_cert}


def cancel_then_migrate(ref_out, ref_status):
    """migrate_cancel of an SEV migration held back by max-bandwidth: SEND_CANCEL returns the guest
    to RUNNING, it computes on, and a second migration to another target completes and the guest
    finishes there with the uninterrupted output."""
    pa, tp1, port1, info1 = pair('c1')
    _, tp2, port2, info2 = pair('c2')
    sp, s = start('c-src', ['-kernel', GUEST], pa, '0x1')
    time.sleep(0.3)
    if s('migrate-set-sev-info', **info1) != {'return': {}}:
        fail('migrate-set-sev-info')
    if s('migrate-set-parameters', **{'max-bandwidth': 4 << 20}) != {'return': {}}:
        fail('migrate-set-parameters max-bandwidth')
    if s('migrate', uri='tcp:127.0.0.1:' + port1) != {'return': {}}:
        fail('migrate to the first target')
    for _ in range(300):
        q = s('query-migrate')['return']
        # Well into the page packets (1 MiB: a quarter second at 4 MiB/s) before the cancel.
        if q.get('status') == 'active' and q.get('ram', {}).get('transferred', 0) > 1 << 20:
            sent_before_cancel = q['ram']['transferred']
            break
        time.sleep(0.02)
    else:
        fail('the limited migration is not active: ' + json.dumps(q))
    if s('query-sev')['return']['state'] != 'send-update':
        fail('SEV state during the migration: ' + s('query-sev')['return']['state'])
    if s('migrate_cancel') != {'return': {}}:
        fail('migrate_cancel')
    q = wait_done(s)
    if q['status'] != 'cancelled':
        fail('after migrate_cancel: ' + json.dumps(q))
    sev = s('query-sev')['return']['state']
    if sev != 'running' or s('query-status')['return']['status'] != 'running':
        fail('after the cancel the source is %s / %s' % (sev, s('query-status')['return']['status']))
    # The second migration, to another target, at full speed.
    s('migrate-set-parameters', **{'max-bandwidth': 0})
    q2 = migrate_to(s, info2, port2, 'to the second target')
    if q2['status'] != 'completed':
        fail('the second migration: ' + json.dumps(q2))
    status = tp2.wait(300)
    out = read('c-src.out') + read('c2-dst.out')
    if out != ref_out or status != ref_status:
        fail('after cancel + migration the guest printed %r (%d), expected %r (%d)' % (out, status, ref_out, ref_status))
    if tp1.wait(30) == 0 or read('c1-dst.out'):
        fail('the first target, whose stream was cancelled, exited 0 or ran the guest')
    s('quit')
    sp.wait(30)
    print('PASS: migrate_cancel after %d bytes: the source is back to running (SEND_CANCEL), and the second '
          'migration completed and the guest finished on the second target' % sent_before_cancel)


def flipped_byte_refused(ref_out, ref_status):
    """A byte changed in the page packets (300000 bytes in: past the header and the SEV session
    section, inside the first pass's SEND_UPDATE_DATA packets): the target refuses the stream and
    says why, never runs the guest; the source's guest runs on (SEND_CANCEL) and finishes right."""
    pa, tp, port, info = pair('f')
    sp, s = start('f-src', ['-kernel', GUEST], pa, '0x1')
    time.sleep(0.3)
    s('migrate-set-sev-info', **info)
    proxy = Proxy(port, flip_at=300000)
    if s('migrate', uri='tcp:127.0.0.1:%d' % proxy.port) != {'return': {}}:
        fail('migrate through the flipping proxy')
    q = wait_done(s)
    if q['status'] != 'failed':
        fail('a changed byte: ' + json.dumps(q))
    if not proxy.flipped:
        fail('the proxy never reached byte 300000')
    tstatus = tp.wait(60)
    err = read('f-dst.err').strip()
    if tstatus == 0 or 'sevemu: -incoming' not in err:
        fail('the target exited %d saying %r' % (tstatus, err))
    if read('f-dst.out'):
        fail('the target ran the guest from a tampered stream')
    if s('query-sev')['return']['state'] != 'running':
        fail('the source is not running after the refusal')
    status = sp.wait(300)
    if read('f-src.out') != ref_out or status != ref_status:
        fail('the source\'s guest did not finish right after the refused migration')
    print('PASS: a byte flipped at 300000 is refused by the target (exit %d: %s); the source\'s guest finished '
          '(%s)' % (tstatus, err.splitlines()[-1], q.get('error-desc')))


def not_ready_refused(ref_out, ref_status):
    """A guest that has not yet run (so has not written KVM_MIGRATION_READY) is not migrated. Every
    bundled SEV guest writes MSR_KVM_MIGRATION_CONTROL first thing (tests/guests/sev_entry.S), so
    this one is held with -S before its first instruction: its launch is not finished (LAUNCH_FINISH
    comes when it first runs, as in QEMU's sev_vm_state_change), and the migration blocker says so
    with the SEV state. The refusal leaves it unharmed: cont, and it finishes right."""
    pa, tp, port, info = pair('n')
    sp, s = start('n-src', ['-kernel', GUEST, '-S'], pa, '0x1')
    if s('migrate-set-sev-info', **info) != {'return': {}}:
        fail('migrate-set-sev-info on a paused guest')
    r = s('migrate', uri='tcp:127.0.0.1:' + port)
    want = "SEV: the guest is in state 'launch-secret'; it migrates once it runs"
    if r != {'error': {'class': 'GenericError', 'desc': want}}:
        fail('migrate before the guest ran: ' + json.dumps(r))
    if s('query-status')['return']['status'] != 'prelaunch' or s('query-sev')['return']['state'] != 'launch-secret':
        fail('the refused guest is %s / %s' % (s('query-status')['return']['status'], s('query-sev')['return']['state']))
    if s('cont') != {'return': {}}:
        fail('cont after the refused migration')
    status = sp.wait(300)
    if read('n-src.out') != ref_out or status != ref_status:
        fail('the guest refused before it ran did not finish right')
    tp.kill()
    tp.wait(30)
    print('PASS: migrate of a guest held with -S (no KVM_MIGRATION_READY yet) refused: %s; after cont it finished' % want)


def nosend_refused(ref_out, ref_status):
    pa, pb = os.path.join(D, 'plat-c'), os.path.join(D, 'plat-d')
    os.makedirs(pa)
    os.makedirs(pb)
    plat_cert, amd_cert = target_info(pb, 'd')
    tp, t = start('dst2', ['-kernel', GUEST, '-incoming', 'tcp:127.0.0.1:0'], pb, '0x9')
    port = t('query-migrate')['return']['socket-address'][0]['port']
    cap = t('query-sev-capabilities')['return']
    sp, s = start('src2', ['-kernel', GUEST], pa, '0x9')  # NODBG | NOSEND
    time.sleep(0.3)
    s('migrate-set-sev-info', pdh=cap['pdh'], **{'plat-cert': plat_cert, 'amd-cert': amd_cert})
    s('migrate', uri='tcp:127.0.0.1:' + port)
    q = wait_done(s)
    if q['status'] != 'failed' or 'NOSEND' not in q.get('error-desc', ''):
        fail('a NOSEND guest: ' + json.dumps(q))
    if s('query-sev')['return']['state'] != 'running':
        fail('the NOSEND guest is not running after the refusal')
    status = sp.wait(300)
    if read('src2.out') != ref_out or status != ref_status:
        fail('the NOSEND guest did not finish right on the source')
    tp.kill()
    print('PASS: a NOSEND guest is refused by SEND_START (%s) and finishes on the source' % q['error-desc'])


class Sink:
    """A listener that takes one connection and reads it until the peer closes it: the other end
    for a source whose SEND_START is expected to refuse (the source connects before it issues
    SEND_START, emulator/migration.cpp, so a migration needs a listener to get that far)."""

    def __init__(self):
        self.ls = socket.socket()
        self.ls.bind(('127.0.0.1', 0))
        self.ls.listen(1)
        self.port = self.ls.getsockname()[1]
        self.received = 0
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        c, _ = self.ls.accept()
        c.settimeout(60)
        try:
            while True:
                buf = c.recv(1 << 16)
                if not buf:
                    break
                self.received += len(buf)
        except OSError:
            pass
        c.close()
        self.ls.close()


SEV_POLICY = 0x21  # NODBG | SEV (bit 5): send only to a platform whose chain leads to the AMD root


def refused_send_start(s, info, port, want_status, what):
    """migrate-set-sev-info + migrate toward `port`: the migration fails in SEND_START with the
    firmware status `want_status`, and the source's guest runs on (query-status, query-sev)."""
    q = migrate_to(s, info, port, what)
    desc = q.get('error-desc', '')
    if q['status'] != 'failed' or 'SEND_START failed' not in desc or want_status not in desc:
        fail('%s: expected a SEND_START refusal with %s, got %s' % (what, want_status, json.dumps(q)))
    state, status = s('query-sev')['return']['state'], s('query-status')['return']['status']
    if state != 'running' or status != 'running':
        fail('%s: after the refusal the source is %s / %s' % (what, state, status))
    return desc


def roots_and_identities(ref_out, ref_status):
    ps, pg, px = (os.path.join(D, n) for n in ('plat-r-src', 'plat-r-genuine', 'plat-r-other'))
    for p in (ps, pg, px):
        os.makedirs(p)
    src = export_full(ps, 'r-src')  # makes the source's chip key and its AMD roots (DIR/roots/MODEL)
    # The genuine target: a second chip of the same generation. AMD's ARK and ASK are the same on
    # every part; its chip key, CEK, PEK and PDH are its own.
    for gen in os.listdir(os.path.join(ps, 'roots')):
        os.makedirs(os.path.join(pg, 'roots', gen))
        for f in ('ark.pem', 'ask.pem', 'ark.cert', 'ask.cert'):
            shutil.copy(os.path.join(ps, 'roots', gen, f), os.path.join(pg, 'roots', gen, f))
    good = export_full(pg, 'r-genuine')
    other = export_full(px, 'r-other')
    for n in ('pdh', 'pek', 'cek'):
        if good[n] == src[n] or other[n] == src[n]:
            fail('the targets\' %s is the source\'s: the platforms do not have identities of their own' % n)
    if good['ark'] != src['ark'] or good['ask'] != src['ask']:
        fail('the genuine target does not share the source\'s AMD roots')
    # AMD certificate: u32 version, then the 16-byte key ID (SEV-KM API 55766 appendix "AMD certificates").
    if other['ark'] == src['ark'] or other['ark'][4:20] != src['ark'][4:20]:
        fail('the other platform\'s ARK should be another key under the same key ID')
    print('PASS: three platforms with identities of their own (PDH, PEK, CEK all differ); the genuine target shares '
          'the source\'s ARK and ASK, the other has its own ARK under the same key ID %r' % src['ark'][4:19].decode())

    def info(c, amd=None):
        return {'pdh': b64(c['pdh']), 'plat-cert': b64(c['pek'] + c['oca'] + c['cek']),
                'amd-cert': b64(amd if amd is not None else c['ask'] + c['ark'])}

    # -trace psp: the firmware's own account of each refusal (cmd_migration.cpp's notes).
    trace = os.path.join(D, 'r-src.trace')
    sp, s = start('r-src', ['-kernel', GUEST, '-trace', 'psp', '-D', trace], ps, hex(SEV_POLICY))
    # 1. A target under another root (a real sevemu target that would take the guest).
    xp, x = start('r-other', ['-kernel', GUEST, '-incoming', 'tcp:127.0.0.1:0'], px, hex(SEV_POLICY))
    xport = int(x('query-migrate')['return']['socket-address'][0]['port'])
    if x('query-sev-capabilities')['return']['pdh'] != b64(other['pdh']):
        fail('the target\'s query-sev-capabilities PDH is not its exported PDH')
    time.sleep(0.3)
    desc = refused_send_start(s, info(other), xport, 'INVALID_CERTIFICATE', 'a target under another root')
    if "ARK is not this platform's root" not in read('r-src.trace'):
        fail('the source\'s -trace psp does not say why SEND_START refused the other root')
    xstatus = xp.wait(60)
    if xstatus == 0 or read('r-other.out'):
        fail('the target under another root exited %d or ran the guest' % xstatus)
    print('PASS: policy SEV, target under another ARK: %s; the source runs on, the target never ran the guest '
          '(exit %d: %s)' % (desc, xstatus, read('r-other.err').strip().splitlines()[-1]))
    # 2. The source's own (genuine) ASK and ARK presented over the other platform's CEK, PEK, PDH:
    # the ARK passes, the ASK does not sign that CEK.
    sink = Sink()
    desc = refused_send_start(s, info(other, src['ask'] + src['ark']), sink.port, 'BAD_SIGNATURE',
                              'genuine roots over another platform\'s CEK')
    if 'ASK -> CEK: ' not in read('r-src.trace'):
        fail('the source\'s -trace psp does not say that the ASK did not sign the CEK')
    print('PASS: policy SEV, the genuine ASK and ARK over another platform\'s CEK: %s; the source runs on' % desc)
    # 3. The genuine target: its own chain, the source's roots. The guest finishes there.
    gp, g = start('r-genuine', ['-kernel', GUEST, '-incoming', 'tcp:127.0.0.1:0'], pg, hex(SEV_POLICY))
    gport = g('query-migrate')['return']['socket-address'][0]['port']
    q = migrate_to(s, info(good), gport, 'genuine')
    if q['status'] != 'completed':
        fail('policy SEV, genuine target: ' + json.dumps(q))
    if s('query-sev')['return']['state'] != 'sent':
        fail('the source is not SENT after the migration to the genuine target')
    gstatus = gp.wait(300)
    out = read('r-src.out') + read('r-genuine.out')
    if out != ref_out or gstatus != ref_status:
        fail('policy SEV: the guest printed %r (status %d) across the migration, the uninterrupted run %r (%d)'
             % (out, gstatus, ref_out, ref_status))
    s('quit')
    sp.wait(30)
    print('PASS: policy SEV, genuine target (its own PDH/PEK/CEK under the source\'s ASK and ARK): SEND_START '
          'accepted it, the guest migrated (%d pages) and finished on the target' % q['ram']['normal'])

    # 4. Without the SEV bit the root is not checked: the chain refused in 2 is accepted, toward the
    # platform under another root, and the guest finishes there.
    sp2, s2 = start('r-src2', ['-kernel', GUEST], ps, '0x1')
    xp2, x2 = start('r-other2', ['-kernel', GUEST, '-incoming', 'tcp:127.0.0.1:0'], px, '0x1')
    x2port = x2('query-migrate')['return']['socket-address'][0]['port']
    time.sleep(0.3)
    q = migrate_to(s2, info(other, src['ask'] + src['ark']), x2port, 'no SEV bit')
    if q['status'] != 'completed':
        fail('without the SEV bit, toward another root: ' + json.dumps(q))
    x2status = xp2.wait(300)
    out = read('r-src2.out') + read('r-other2.out')
    if out != ref_out or x2status != ref_status:
        fail('without the SEV bit the guest printed %r (%d), expected %r (%d)' % (out, x2status, ref_out, ref_status))
    s2('quit')
    sp2.wait(30)
    print('PASS: without the SEV bit (policy 0x1) the same chain (another root, a CEK the ASK never signed) is not '
          'checked: the guest migrated and finished on the platform under another root')


PAT_POWER_ON = struct.pack('<Q', 0x0007040600070406)
GUEST_RAM_BASE = 64 << 20  # emulator/sev_runtime.h SevRuntime::kGuestRamBase: GPA 0 of an SEV guest
PAGE = 4096
GHCB_GPA = 0x8000  # tests/guests/sev.h SEV_ES_GHCB_GPA


def parse_stream(wire):
    """The live stream as README "The live-migration stream" describes it: the last copy of each
    page ({page address: (kind, bytes if in the clear)}) and the "sev-shared-regions" list
    [(first gfn, pages)] (emulator/sev_migration.cpp's header comment), or None without it."""
    if wire[:16] != b'SEVEMU-SNAPSHOT\n':
        fail('the recorded stream has no SEVEMU-SNAPSHOT header')
    at, pages, shared = 24, {}, None
    while wire[at] == 0x01:
        n = wire[at + 1]
        name = bytes(wire[at + 2:at + 2 + n])
        _, length = struct.unpack_from('<IQ', wire, at + 2 + n)
        body = bytes(wire[at + 14 + n:at + 14 + n + length])
        at += 14 + n + length + 4
        if name == b'ram-pages':
            _, count = struct.unpack_from('<II', body, 0)
            p = 8
            for _ in range(count):
                addr, kind = struct.unpack_from('<QB', body, p)
                p += 9
                data = None
                if kind == 1:
                    data = body[p:p + PAGE]
                    p += PAGE
                elif kind >= 2:
                    p += 4 + struct.unpack_from('<I', body, p)[0]
                pages[addr] = (kind, data)
        elif name == b'sev-shared-regions':
            count, = struct.unpack_from('<I', body, 0)
            shared = [struct.unpack_from('<QQ', body, 4 + 16 * i) for i in range(count)]
    if wire[at] != 0xFF:
        fail('the recorded stream has no end record (byte %#x at %d)' % (wire[at], at))
    return pages, shared


def ghcb_in_the_clear(wire):
    """The SEV-ES guest's GHCB page is in the shared-regions list and its last copy went in the
    clear, holding a GHCB the guest filled (tests/guests/sev_es.c ghcb_call: protocol version 1,
    the hypervisor's only one here, at 0xFFA; SW_EXITCODE at 0x390: CPUID 0x72, IOIO 0x7B, MSR
    0x7C or VMMCALL 0x81); the guest's private pages went as SEND_UPDATE_DATA packets."""
    pages, shared = parse_stream(wire)
    gfn = GHCB_GPA // PAGE
    if shared is None or not any(g <= gfn < g + n for g, n in shared):
        fail('the SEV-ES stream\'s sev-shared-regions %s does not list the GHCB page %#x' % (shared, GHCB_GPA))
    kind, data = pages.get(GUEST_RAM_BASE + GHCB_GPA, (None, None))
    if kind != 1:
        fail('the GHCB page %#x went as kind %s, not in the clear (kind 1)' % (GHCB_GPA, kind))
    version, = struct.unpack_from('<H', data, 0xFFA)
    exit_code, = struct.unpack_from('<Q', data, 0x390)
    if version != 1 or exit_code not in (0x72, 0x7B, 0x7C, 0x81):
        fail('the GHCB page sent in the clear holds version %d, exit code %#x: not the guest\'s GHCB'
             % (version, exit_code))
    clear = sorted((a - GUEST_RAM_BASE) // PAGE for a, (k, _) in pages.items() if k == 1)
    listed = set(g + i for g, n in shared for i in range(n))
    if not set(clear) <= listed:
        fail('pages outside the shared-regions list went in the clear: %s' % [hex(g * PAGE) for g in clear if g not in listed])
    packets = sum(1 for k, _ in pages.values() if k >= 2)
    if packets == 0:
        fail('no SEND_UPDATE_DATA packet in the SEV-ES stream')
    return shared, exit_code, packets


def exec_range(elf):
    """The guest's executable PT_LOAD segment(s): [lo, hi) of the RIPs it can have."""
    b = open(elf, 'rb').read()
    phoff, = struct.unpack_from('<Q', b, 0x20)
    phentsize, phnum = struct.unpack_from('<HH', b, 0x36)
    lo, hi = None, None
    for i in range(phnum):
        ptype, flags, _, vaddr, _, _, memsz = struct.unpack_from('<IIQQQQQ', b, phoff + i * phentsize)
        if ptype == 1 and flags & 1:
            lo = vaddr if lo is None else min(lo, vaddr)
            hi = vaddr + memsz if hi is None else max(hi, vaddr + memsz)
    if lo is None:
        fail('no executable segment in ' + elf)
    return lo, hi


def vcpu_section(wire, index=0):
    """The "sev-vcpuN" section of a recorded stream (base/state_stream.cpp framing: tag, u8 name
    length, name, u32 version, u64 payload size, payload, u32 CRC): (version, payload)."""
    name = ('sev-vcpu%d' % index).encode()
    k = wire.find(bytes([len(name)]) + name)
    if k < 1:
        fail('no %s section in the recorded stream' % name.decode())
    at = k + 1 + len(name)
    version, size = struct.unpack_from('<IQ', wire, at)
    return version, wire[at + 12:at + 12 + size]


def register_values(payload, lo, hi):
    """What of a vCPU's registers the section shows in the clear: the power-on PAT, RIP-like values."""
    found = []
    if PAT_POWER_ON in payload:
        found.append('PAT at %#x' % payload.find(PAT_POWER_ON))
    for off in range(len(payload) - 7):
        v, = struct.unpack_from('<Q', payload, off)
        if lo <= v < hi:
            found.append('%#x at %#x' % (v, off))
            break
    return found


class VmsaFlipProxy(Proxy):
    """Forwards the stream but, in the "sev-vcpu0" section, changes the byte 100 bytes before the
    end of the payload (inside the VMSA packet, the payload's last 4096 bytes) and writes the
    section CRC for the changed bytes, so that only the firmware's MAC can tell."""

    def pump(self, a, b, record):
        if not record:
            return Proxy.pump(self, a, b, record)
        name = b'\x09sev-vcpu0'
        fwd = 0
        try:
            a.settimeout(0.1)
            while True:
                try:
                    buf = a.recv(1 << 16)
                    if not buf:
                        break
                    self.data += buf
                    idle = False
                except socket.timeout:
                    idle = True
                limit = len(self.data)
                if not self.flipped:
                    k = self.data.find(name, max(0, fwd - 16))
                    if k < 1:
                        if not idle:
                            limit = max(fwd, len(self.data) - 16)
                    else:
                        start, hdr_end = k - 1, k + len(name) + 12
                        size = struct.unpack_from('<Q', self.data, k + len(name) + 4)[0] if len(self.data) >= hdr_end else None
                        if size is None or len(self.data) < hdr_end + size + 4:
                            limit = start
                        else:
                            self.data[hdr_end + size - 100] ^= 0x01
                            struct.pack_into('<I', self.data, hdr_end + size, zlib.crc32(bytes(self.data[start:hdr_end + size])))
                            self.flipped = True
                if limit > fwd:
                    b.sendall(self.data[fwd:limit])
                    fwd = limit
            if fwd < len(self.data):
                b.sendall(self.data[fwd:])
        except OSError:
            pass
        self.shut_both(a, b)


def es_pair(tag):
    pa, pb = os.path.join(D, 'plat-%s-src' % tag), os.path.join(D, 'plat-%s-dst' % tag)
    os.makedirs(pa)
    os.makedirs(pb)
    plat_cert, amd_cert = target_info(pb, tag)
    tp, t = start(tag + '-dst', ['-kernel', ES_GUEST, '-incoming', 'tcp:127.0.0.1:0'], pb, '0x5')
    port = t('query-migrate')['return']['socket-address'][0]['port']
    cap = t('query-sev-capabilities')['return']
    sp, s = start(tag + '-src', ['-kernel', ES_GUEST], pa, '0x5')
    time.sleep(0.3)
    if s('migrate-set-sev-info', pdh=cap['pdh'], **{'plat-cert': plat_cert, 'amd-cert': amd_cert}) != {'return': {}}:
        fail('migrate-set-sev-info')
    if s('query-status')['return']['status'] != 'running':
        fail('the SEV-ES guest is not computing when the migration starts')
    return tp, sp, s, port


def es_cases():
    plat = os.path.join(D, 'plat-es-ref')
    os.makedirs(plat)
    r = subprocess.run([SEVEMU, '-display', 'none', '-serial', 'file:%s/es-ref.out' % D, '-device',
                        'isa-debug-exit,iobase=0xf4,iosize=0x04', '-m', '64', '-machine',
                        'confidential-guest-support=sev0', '-object',
                        'sev-guest,id=sev0,policy=0x5,cbitpos=51,reduced-phys-bits=1', '--platform', plat,
                        '-kernel', ES_GUEST], timeout=300)
    ref_out, ref_status = read('es-ref.out'), r.returncode
    if 'checksum' not in ref_out or 'sev-es: active' not in ref_out:
        fail('SEV-ES reference run: ' + ref_out)
    lo, hi = exec_range(ES_GUEST)

    # The control: a plain SEV guest's vCPU section shows its registers.
    pa, tp, port, info = pair('c')
    sp, s = start('c-src', ['-kernel', GUEST], pa, '0x1')
    time.sleep(0.3)
    s('migrate-set-sev-info', **info)
    proxy = Proxy(port)
    if s('migrate', uri='tcp:127.0.0.1:%d' % proxy.port) != {'return': {}}:
        fail('control migrate')
    if wait_done(s)['status'] != 'completed':
        fail('control migration')
    version, payload = vcpu_section(proxy.capture())
    plo, phi = exec_range(GUEST)
    seen = register_values(payload, plo, phi)
    if version != 2 or len(seen) < 2:
        fail('the plain SEV guest\'s sev-vcpu0 (version %d) shows %s: the search does not work' % (version, seen))
    for p in (sp, tp):
        p.kill()
        p.wait(30)
    print('PASS: control: the plain SEV guest\'s sev-vcpu0 section shows its registers (%s)' % ', '.join(seen))

    # The SEV-ES guest migrates while it computes.
    tp, sp, s, port = es_pair('es')
    proxy = Proxy(port)
    if s('migrate', uri='tcp:127.0.0.1:%d' % proxy.port) != {'return': {}}:
        fail('SEV-ES migrate')
    q = wait_done(s)
    if q['status'] != 'completed':
        fail('SEV-ES migration ' + json.dumps(q))
    wire = proxy.capture()
    seen = [m.hex() for m in markers() if m in wire]
    if seen:
        fail('the SEV-ES stream carries the guest\'s private plaintext: %s' % seen)
    shared, ghcb_exit, packets = ghcb_in_the_clear(wire)
    version, payload = vcpu_section(wire)
    if version != 2 or len(payload) < 4096 + 0x34:
        fail('sev-vcpu0 of the SEV-ES stream: version %d, %d bytes (no VMSA packet)' % (version, len(payload)))
    seen = register_values(payload, lo, hi)
    if seen:
        fail('the SEV-ES stream shows the vCPU\'s registers in the clear: %s' % seen)
    if s('query-sev')['return']['state'] != 'sent':
        fail('SEV-ES source state ' + s('query-sev')['return']['state'])
    status = tp.wait(300)
    out = read('es-src.out') + read('es-dst.out')
    if out != ref_out or status != ref_status:
        fail('the migrated SEV-ES guest printed %r (status %d), the uninterrupted run %r (%d)' % (out, status, ref_out, ref_status))
    if 'checksum' not in read('es-dst.out'):
        fail('the SEV-ES guest did not finish on the target: %r' % read('es-dst.out'))
    s('quit')
    sp.wait(30)
    print('PASS: SEV-ES guest migrated while computing (%d pages, downtime %d ms; VMSA through SEND/RECEIVE_UPDATE_VMSA) '
          'and finished on the target with the uninterrupted output' % (q['ram']['normal'], q['downtime']))
    print('PASS: the SEV-ES sev-vcpu0 section (%d bytes) shows no PAT and no value in the guest\'s code range '
          '[%#x, %#x) (stream of %d bytes)' % (len(payload), lo, hi, len(wire)))
    print('PASS: none of %d known 8-byte values of the SEV-ES guest\'s private array in the stream; %d private '
          'pages as SEND_UPDATE_DATA packets' % (len(markers()), packets))
    print('PASS: the SEV-ES stream\'s sev-shared-regions (gfn, pages) %s lists the GHCB page %#x, which went in '
          'the clear holding the guest\'s last request (SW_EXITCODE %#x, protocol version 1)'
          % (', '.join('(%#x, %d)' % r for r in shared), GHCB_GPA, ghcb_exit))

    # A byte flipped in the VMSA packet (section CRC rewritten): BAD_MEASUREMENT on the target.
    tp, sp, s, port = es_pair('ef')
    proxy = VmsaFlipProxy(port)
    if s('migrate', uri='tcp:127.0.0.1:%d' % proxy.port) != {'return': {}}:
        fail('SEV-ES migrate through the flipping proxy')
    q = wait_done(s)
    if q['status'] != 'failed':
        fail('a changed VMSA packet: ' + json.dumps(q))
    if not proxy.flipped:
        fail('the proxy never saw sev-vcpu0')
    tstatus = tp.wait(60)
    err = read('ef-dst.err').strip()
    if tstatus == 0 or 'RECEIVE_UPDATE_VMSA' not in err or 'BAD_MEASUREMENT' not in err:
        fail('the target exited %d saying %r' % (tstatus, err))
    if read('ef-dst.out'):
        fail('the target ran the SEV-ES guest from a tampered VMSA')
    if s('query-sev')['return']['state'] != 'running':
        fail('the SEV-ES source is not running after the refusal')
    status = sp.wait(300)
    if read('ef-src.out') != ref_out or status != ref_status:
        fail('the SEV-ES source\'s guest did not finish right after the refused migration: %r' % read('ef-src.out'))
    print('PASS: a byte flipped in the VMSA packet is refused by the target (exit %d: %s); the source\'s guest '
          'finished' % (tstatus, err.splitlines()[-1]))


try:
    if MODE == 'es':
        es_cases()
        sys.exit(0)
    ref_out, ref_status = reference()
    if 'checksum' not in ref_out:
        fail('reference run: ' + ref_out)
    if MODE == 'roots':
        roots_and_identities(ref_out, ref_status)
    else:
        migrate_while_computing(ref_out, ref_status)
        plain_stream_has_markers()
        nosend_refused(ref_out, ref_status)
        cancel_then_migrate(ref_out, ref_status)
        flipped_byte_refused(ref_out, ref_status)
        not_ready_refused(ref_out, ref_status)
finally:
    for p in procs:
        if p.poll() is None:
            p.kill()
    shutil.rmtree(D, ignore_errors=True)
