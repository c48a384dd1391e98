#!/usr/bin/env python3
"""SEV live migration between two sevemu processes (suite 'migration'), as a user of QEMU's SEV
migration series drives it: the target (-incoming tcp:, its own platform directory) gives its PDH
(query-sev-capabilities); its chain comes from `sevemu-host export --full` on the target's
platform; the source gets them with migrate-set-sev-info and migrates while the SEV guest
(bench-memory-sev: it rewrites 4 MiB for seconds) computes. Checked: the target finishes with the
uninterrupted SEV run's output; the source ends SENT and refuses cont; and a NOSEND guest (policy
bit 3) is refused by the firmware's SEND_START, after which it runs on and finishes right.

usage: migrate_sev.py SEVEMU SEVEMU_HOST GUEST_ELF
"""
import base64, json, os, shutil, socket, subprocess, sys, tempfile, time

SEVEMU, HOST, GUEST = sys.argv[1:4]
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
            'isa-debug-exit,iobase=0xf4,iosize=0x04', '-m', '64', '-machine', 'confidential-guest-support=sev0',
            '-object', 'sev-guest,id=sev0,policy=%s,cbitpos=51,reduced-phys-bits=1' % policy, '--platform', plat,
            '-qmp', 'unix:%s/%s.sock,server=on,wait=off' % (D, name)] + extra
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


def target_info(plat, name):
    chain = os.path.join(D, name + '-chain')
    subprocess.run([HOST, '--platform', plat, 'export', '--full', chain], check=True, stdout=subprocess.DEVNULL)
    rd = lambda n: open(os.path.join(chain, n), 'rb').read()
    return (base64.b64encode(rd('pek.cert') + rd('oca.cert') + rd('cek.cert')).decode(),
            base64.b64encode(rd('ask.cert') + rd('ark.cert')).decode())


def wait_done(s):
    for _ in range(1200):
        q = s('query-migrate')['return']
        if q.get('status') in ('completed', 'failed', 'cancelled'):
            return q
        time.sleep(0.05)
    fail('migration did not end')


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
    r = s('migrate', uri='tcp:127.0.0.1:' + port)
    if r != {'return': {}}:
        fail('migrate: ' + json.dumps(r))
    q = wait_done(s)
    if q['status'] != 'completed':
        fail('migration ' + json.dumps(q))
    if q['ram']['normal'] == 0:
        fail('no pages sent')
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


try:
    ref_out, ref_status = reference()
    if 'checksum' not in ref_out:
        fail('reference run: ' + ref_out)
    migrate_while_computing(ref_out, ref_status)
    nosend_refused(ref_out, ref_status)
finally:
    for p in procs:
        if p.poll() is None:
            p.kill()
    shutil.rmtree(D, ignore_errors=True)
