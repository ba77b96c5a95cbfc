#!/usr/bin/env python3
"""A file truncated while `statedict diff` has it mapped: exit 3 and a message naming it
("changed while mapped"), never death by SIGBUS (issue 11).

Usage: sigbus.py STATEDICT

Deterministic, without hooks in the program: A and B hold 6,000 ints that all differ, then an
8 MB tensor. `diff A B` prints one line per differing int, in A's order, before it reads the
tensors; its stdout is a pipe this script does not read, so once the pipe is full the command
is blocked in write() with both files mapped and no tensor page read yet. B is then truncated
and the pipe drained: the comparison of the tensors touches pages past B's new end.
"""
import fcntl, io, os, struct, subprocess, sys, tempfile, termios, time, zipfile

F_GETPIPE_SZ = 1032


def G(mod, name): return b'c' + mod.encode() + b'\n' + name.encode() + b'\n'
def U(s): b = s.encode(); return b'X' + struct.pack('<I', len(b)) + b
def I(n): return b'J' + struct.pack('<i', n)
def T(*items): return b'(' + b''.join(items) + b't'


def checkpoint(delta, n_ints=6000, numel=2 << 20):
    ents = b''.join(U('k%d' % i) + I(i + delta) + b's' for i in range(n_ints))
    pid = T(U('storage'), G('torch', 'FloatStorage'), U('0'), U('cpu'), I(numel)) + b'Q'
    tensor = (G('torch._utils', '_rebuild_tensor_v2') + b'(' + pid + I(0) + T(I(numel)) + T(I(1)) +
              b'\x89' + G('collections', 'OrderedDict') + b')R' + b't' + b'R')
    pkl = b'\x80\x02}' + ents + U('z') + tensor + b's.'
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', zipfile.ZIP_STORED) as z:
        z.writestr('archive/data.pkl', pkl)
        z.writestr('archive/data/0', struct.pack('<f', 1.0) * numel)
        z.writestr('archive/version', b'3\n')
    return buf.getvalue()


def attempt(bin_, d):
    a, b = os.path.join(d, 'a.pt'), os.path.join(d, 'b.pt')
    for name, delta in ((a, 0), (b, 1)):
        raw = os.path.join(d, 'raw.pt')
        with open(raw, 'wb') as f:
            f.write(checkpoint(delta))
        # statedict's own writer aligns payloads, so a default load maps them in place
        subprocess.run([bin_, 'convert', raw, name], check=True)
    r, w = os.pipe()
    err = tempfile.TemporaryFile()
    p = subprocess.Popen([bin_, 'diff', a, b], stdout=w, stderr=err)
    os.close(w)
    cap = fcntl.fcntl(r, F_GETPIPE_SZ)
    deadline = time.monotonic() + 60
    while True:  # until the pipe is full and stays full: the command is blocked in write()
        n = struct.unpack('i', fcntl.ioctl(r, termios.FIONREAD, b'\0\0\0\0'))[0]
        if n >= cap:
            time.sleep(0.2)
            if struct.unpack('i', fcntl.ioctl(r, termios.FIONREAD, b'\0\0\0\0'))[0] == n:
                break
        if p.poll() is not None or time.monotonic() > deadline:
            p.kill()
            p.wait()
            os.close(r)
            return None, 'diff did not block on a full pipe (exit %s)' % p.returncode
        time.sleep(0.01)
    os.truncate(b, 4096)
    out = b''
    while True:
        chunk = os.read(r, 1 << 16)
        if not chunk:
            break
        out += chunk
    os.close(r)
    rc = p.wait(timeout=60)
    err.seek(0)
    msg = err.read().decode('utf-8', 'replace')
    return rc, msg


def main():
    bin_ = sys.argv[1]
    with tempfile.TemporaryDirectory(prefix='sdict-sigbus-') as d:
        rc, msg = attempt(bin_, d)
    print('diff with B truncated while mapped: exit %s, stderr: %s' % (rc, msg.strip()))
    ok = rc == 3 and 'changed while mapped' in msg and 'b.pt' in msg
    print('sigbus: %s' % ('ok' if ok else 'FAIL (want exit 3 and "changed while mapped" naming b.pt)'))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
