#!/usr/bin/env python3
"""verify and --verify-crc never say OK about what they did not check (issue 11).

torch 2.6+ writes every record's CRC as 0 after torch.serialization.set_crc32_options(False).
This script writes such a file and a normal one with the torch it runs under, checks that the
CRC fields really are 0 (and real in the other), then that:
  statedict verify         exits 1, says "no CRC recorded" and FAILED, never "OK";
  statedict ls --verify-crc exits non-zero saying "no CRC recorded";
  statedict ls             (no verification asked) lists the tensor;
  and the same commands pass on the file written with CRCs.

Usage: no_crc.py STATEDICT      (exit 77 when torch lacks set_crc32_options)
"""
import os, subprocess, sys, tempfile, zipfile

try:
    import torch
except ImportError:
    print("skipping: this python cannot import torch")
    sys.exit(77)
if not hasattr(torch.serialization, 'set_crc32_options'):
    print("skipping: torch %s has no set_crc32_options" % torch.__version__)
    sys.exit(77)

STATEDICT = sys.argv[1]
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL " + msg)


def run(*args):
    p = subprocess.run([STATEDICT] + list(args), capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


sd = {'w': torch.arange(6, dtype=torch.float32).reshape(2, 3), 'b': torch.ones(3)}
with tempfile.TemporaryDirectory(prefix='sdict_nocrc_') as tmp:
    off, on = os.path.join(tmp, 'no_crc.pt'), os.path.join(tmp, 'crc.pt')
    torch.serialization.set_crc32_options(False)
    try:
        torch.save(sd, off)
    finally:
        torch.serialization.set_crc32_options(True)
    torch.save(sd, on)
    with zipfile.ZipFile(off) as z:
        crcs = [(i.filename, i.CRC, i.file_size) for i in z.infolist()]
    check(all(c == 0 for _, c, _ in crcs), 'CRCs off: expected every CRC 0: %r' % crcs)
    with zipfile.ZipFile(on) as z:
        check(any(i.CRC != 0 for i in z.infolist()), 'CRCs on: expected real CRCs')
    unverifiable = sum(1 for _, _, n in crcs if n > 0)

    rc, out, err = run('verify', off)
    print('verify no_crc.pt: exit %d\n  %s  %s' % (rc, out.strip(), err.strip()))
    check(rc == 1, 'verify of a file without CRCs: exit %d, want 1' % rc)
    check('no CRC recorded' in err and off in err, 'verify: message lacks "no CRC recorded": ' + err)
    check('%d records' % unverifiable in err, 'verify: message does not count the %d records: %s'
          % (unverifiable, err))
    check(': OK' not in out and 'FAILED' in out, 'verify: printed %r' % out)
    check('unverified' in err and 'corrupt' not in err and 'CRC mismatch' not in err,
          'verify: a file without CRCs is not corrupt: ' + err)

    rc, out, err = run('ls', '--verify-crc', off)
    check(rc != 0 and 'no CRC recorded' in err, 'ls --verify-crc: exit %d %s' % (rc, err))
    rc, out, err = run('ls', off)
    check(rc == 0 and 'w ' in out and '[2, 3]' in out, 'ls without verification: exit %d %s %s'
          % (rc, out, err))

    rc, out, err = run('verify', on)
    check(rc == 0 and out.strip() == on + ': OK', 'verify of a file with CRCs: %d %s %s' % (rc, out, err))
    rc, out, err = run('ls', '--verify-crc', on)
    check(rc == 0, 'ls --verify-crc of a file with CRCs: %d %s' % (rc, err))
print('no_crc: %d failures' % len(failures))
sys.exit(1 if failures else 0)
