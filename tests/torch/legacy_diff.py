#!/usr/bin/env python3
"""Differentials between torch.load's legacy reading and statedict's (issue 11).

Usage: legacy_diff.py STATEDICT
Run by /usr/bin/python3 with torch 1.13 (registered for that generation only: its torch.load
defaults to weights_only=False, so a legacy file's pickles run unrestricted).

Each case builds, in a throwaway temp folder, a file where torch (Python's tarfile, then the
magic-number stream, through _pickle.c) reads another structure than statedict's tar/stream
reading would, with a payload that creates a marker file in that folder on torch's side only.
It checks that torch.load(path) really creates the marker (the differential is real), and that
`statedict ls`, `statedict scan` and `statedict verify` all refuse the file (non-zero exit, never
printed as clean), naming the file, and saying why ("ambiguous" where the two readings differ).
Classes that cannot run code in torch 1.13 say so (expect_marker=False) and still check that
statedict refuses the file and torch does not run the payload.
"""
import os, struct, subprocess, sys, tarfile, tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'safetensors'))
from hostile_st import STRICT_PREFIXES, pickle_polyglot  # noqa: E402

STATEDICT = sys.argv[1]

try:
    import torch  # noqa: F401
except ImportError:
    print("torch is not importable: skipped")
    sys.exit(77)

# ---- pickle pieces (opcode by opcode, as tests/hostile/gen_hostile.py) ------------------------
def G(mod, name): return b'c' + mod.encode() + b'\n' + name.encode() + b'\n'
def U(s): b = s.encode(); return b'X' + struct.pack('<I', len(b)) + b
def I(n):
    if 0 <= n < 256: return b'K' + bytes([n])
    return b'J' + struct.pack('<i', n)
def T(*items): return b'(' + b''.join(items) + b't'
P2, STOP, SETITEM, TRUE = b'\x80\x02', b'.', b's', b'\x88'
MAGIC_LONG = b'\x8a\x0a' + (0x1950a86a20f9469cfc6c).to_bytes(10, 'little')
MAGIC = P2 + MAGIC_LONG + STOP
PROTO = P2 + b'M\xe9\x03' + STOP
SYSINFO = (P2 + b'}' + U('protocol_version') + b'M\xe9\x03' + SETITEM + U('little_endian') + TRUE +
           SETITEM + U('type_sizes') + b'}' + U('short') + I(2) + SETITEM + U('int') + I(4) + SETITEM +
           U('long') + I(4) + SETITEM + SETITEM + STOP)
CLEAN_OBJ = P2 + b'}' + U('epoch') + I(3) + SETITEM + STOP          # {'epoch': 3}
KEYS = P2 + b']' + STOP                                             # no storages

def payload(marker):
    """A pickle that runs `touch MARKER` when unpickled without restriction."""
    return P2 + G('posix', 'system') + T(U('touch ' + marker)) + b'R' + STOP

# ---- tar pieces -------------------------------------------------------------------------------
def hdr(name, size, typ=b'0', link=b'', prefix=b'', magic=b'ustar\x0000', size_field=None,
        chk='good', pad=b''):
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b'0000644\0'
    h[108:116] = b'0000000\0'
    h[116:124] = b'0000000\0'
    h[124:136] = size_field if size_field is not None else b'%011o\0' % size
    h[136:148] = b'00000000000\0'
    h[156:157] = typ
    h[157:157 + len(link)] = link
    h[257:265] = magic
    h[345:345 + len(prefix)] = prefix
    h[500:500 + len(pad)] = pad
    h[148:156] = b' ' * 8
    if chk == 'signed':
        s = sum(b - 256 if b > 127 else b for b in h)
    else:
        s = sum(h) + (1 if chk == 'bad' else 0)
    h[148:156] = b'%06o\0 ' % s
    return bytes(h)

def member(name, data, **kw):
    return hdr(name, len(data), **kw) + data + b'\0' * (-len(data) % 512)

TAR_STORAGES = (P2 + I(1) + STOP + P2 + T(U('1'), U('cpu'), G('torch', 'FloatStorage')) + STOP +
                struct.pack('<q', 4) + struct.pack('<4f', 1, 2, 3, 4) + P2 + b']' + STOP)
TAR_TENSORS = (P2 + I(1) + STOP + P2 + T(U('t1'), U('1'), G('torch', 'FloatTensor')) + STOP +
               struct.pack('<ii', 1, 0) + struct.pack('<qqq', 4, 1, 0))
TAR_PICKLE = P2 + b'}' + U('w') + U('t1') + b'Q' + SETITEM + STOP     # {'w': tensor t1}
END = b'\0' * 1024

def clean_members(pickle=TAR_PICKLE):
    return [member(b'sys_info', SYSINFO), member(b'pickle', pickle),
            member(b'tensors', TAR_TENSORS), member(b'storages', TAR_STORAGES)]

# ---- the cases --------------------------------------------------------------------------------
def cases(marker):
    evil = payload(marker)
    out = []
    def case(name, data, expect_marker, needle, why):
        out.append((name, data, expect_marker, needle, why))

    # Legacy tar: the first header. A ustar block with a wrong checksum: tarfile raises, torch
    # reads the bytes as a magic-number stream whose first pickle (the name field) runs.
    assert len(evil) <= 100
    case('tar_bad_checksum', hdr(evil, 0, chk='bad') + b''.join(clean_members()) + END, True,
         'ambiguous', 'wrong header checksum: tarfile rejects, torch reads a stream')
    # Size field "0 1": statedict used to read 0, tarfile's nti raises (int("0 1", 8)).
    case('tar_size_not_octal', hdr(evil, 0, size_field=b'0 1\0\0\0\0\0\0\0\0\0') +
         b''.join(clean_members()) + END, True, 'ambiguous',
         'size field tarfile rejects: torch reads a stream')
    # A v7 header (no ustar magic) whose checksum only matches the signed sum: tarfile reads it
    # as a tar; statedict now does too and refuses the tar's pickle for its global (it used to
    # fall through to the stream reading and call the file "not a checkpoint").
    case('tar_signed_checksum',
         hdr(b'sys_info', len(SYSINFO), magic=b'\0' * 8, chk='signed', pad=b'\xff' * 4) +
         SYSINFO + b'\0' * (-len(SYSINFO) % 512) +
         member(b'pickle', evil) + member(b'tensors', TAR_TENSORS) +
         member(b'storages', TAR_STORAGES) + END, True, 'posix.system',
         'signed checksum: both read a tar, the payload global is refused')
    # Members: tarfile's getmember takes the LAST member of a name, of any regular-ish type.
    case('tar_contiguous_type', b''.join(clean_members()) + member(b'pickle', evil, typ=b'7') + END,
         True, 'ambiguous', "a second 'pickle' of type '7' (contiguous) that tarfile extracts")
    case('tar_unknown_type', b''.join(clean_members()) + member(b'pickle', evil, typ=b'Z') + END,
         True, 'ambiguous', "a second 'pickle' of unknown type 'Z' that tarfile extracts")
    pax = b'%d path=pickle\n' % (len(b' path=pickle\n') + 2)
    case('tar_pax_path', b''.join(clean_members()) + member(b'PaxHeader/zzz', pax, typ=b'x') +
         member(b'zzz', evil) + END, True, 'ambiguous', "a PAX header renames 'zzz' to 'pickle'")
    case('tar_gnu_longname', b''.join(clean_members()) +
         member(b'././@LongLink', b'pickle\0', typ=b'L') + member(b'zzz', evil) + END, True,
         'ambiguous', "a GNU long name renames 'zzz' to 'pickle'")
    case('tar_hardlink', member(b'evil', evil) + b''.join(clean_members()) +
         hdr(b'pickle', 0, typ=b'1', link=b'evil') + END, True, 'ambiguous',
         "a hard link 'pickle' to member 'evil'")
    case('tar_symlink', member(b'evil', evil) + b''.join(clean_members()) +
         hdr(b'pickle', 0, typ=b'2', link=b'evil') + END, True, 'ambiguous',
         "a symbolic link 'pickle' to member 'evil'")
    hidden = member(b'pickle', evil)
    case('tar_symlink_with_size', b''.join(clean_members()) +
         hdr(b'lnk', len(hidden), typ=b'2', link=b'x') + hidden + END, True, 'ambiguous',
         "a symlink whose size covers a hidden 'pickle': tarfile does not skip a link's data")
    # Data of the first member past the end: tarfile raises ReadError when it looks for the next
    # header, and torch falls back to the stream reading (the name field's pickle runs).
    case('tar_member_past_eof', hdr(evil, 1 << 20) + b'\0' * 512, True, 'magic-number stream',
         'member data past the end: tarfile raises late, torch reads a stream')
    # Cannot run code in torch: tarfile only ever sees fewer or other-named members, so torch
    # fails (KeyError) where statedict used to read the clean members.
    case('tar_prefix', b''.join(clean_members()[:1]) + member(b'pickle', TAR_PICKLE, prefix=b'x') +
         b''.join(clean_members()[2:]) + END, False, "no 'pickle' member",
         "a ustar prefix: tarfile (and now statedict) name the member 'x/pickle'")
    case('tar_invalid_later_header', member(b'sys_info', SYSINFO) +
         hdr(b'junk', 0, chk='bad') + b''.join(clean_members()[1:]) + END, False, 'ambiguous',
         'tarfile ends the archive at the first invalid header after the first')

    # Legacy stream: a STOP inside a large FRAME. _pickle.c reads a frame this large with one
    # read(), so torch's next pickle.load starts after the frame; statedict read on after STOP.
    inner = MAGIC_LONG + STOP + PROTO + SYSINFO + CLEAN_OBJ + KEYS
    frame = inner + b'\0' * (100000 - len(inner))
    case('stream_stop_inside_frame', b'\x80\x04\x95' + struct.pack('<Q', len(frame)) + frame +
         evil + SYSINFO + CLEAN_OBJ + KEYS, True, 'ambiguous',
         'STOP inside a 100 kB FRAME: torch reads the protocol pickle after the frame')
    # Header pickles run unrestricted in torch. With statedict's allow-listed globals nothing
    # can run, so torch 1.13 shows no payload here: statedict refuses any global there.
    odict_sysinfo = P2 + G('collections', 'OrderedDict') + b')R' + STOP
    case('stream_sysinfo_global', MAGIC + PROTO + odict_sysinfo + CLEAN_OBJ + KEYS, False,
         'only literals', 'a global in sys_info (allow-listed, harmless, still refused)')
    # A payload in the key list (read after the object with a plain pickle.load).
    case('stream_keys_payload', MAGIC + PROTO + SYSINFO + CLEAN_OBJ + evil, True, 'only literals',
         'a payload in the storage key list')
    # fix_imports: protocol 3 does not rename __builtin__, so torch cannot import it.
    case('stream_builtin_proto3', MAGIC + PROTO + SYSINFO +
         b'\x80\x03' + G('__builtin__', 'set') + b')R' + STOP + KEYS, False, '__builtin__.set',
         "protocol 3 '__builtin__.set': Python has no such module, statedict now refuses it")
    # A safetensors file whose bytes are also a pickle stream from byte 0 (every torch before
    # 2.14 reads a file that is no zip or tar so): the global may sit behind opcodes Python
    # reads on and statedict's machine stops at (its limits, stricter number text).
    proto0 = b"cposix\nsystem\n(S'touch " + marker.encode() + b"'\ntR."
    case('safetensors_pickle_polyglot', pickle_polyglot(proto0), True, 'ambiguous',
         'a safetensors file that is also a pickle calling a global')
    for pname, prefix in STRICT_PREFIXES.items():
        case('safetensors_polyglot_' + pname, pickle_polyglot(prefix + proto0), True,
             'ambiguous', 'the polyglot behind %r, which Python reads on' % prefix[:12])
    return out

def agreements():
    """Pickle rules statedict matches exactly: torch.load and `statedict ls` give the same value.
    MEMOIZE stores at len(memo), so after PUT 1 it overwrites slot 1 ({'a': 7}, not {'a': []});
    protocol 2 renames __builtin__.set to builtins.set (an empty set either way)."""
    fails = 0
    memo = b'\x80\x04]q\x01' + b'0' + b'K\x07\x94' + b'0' + b'}\x8c\x01ah\x01s.'
    b2 = P2 + b'}' + U('s') + G('__builtin__', 'set') + b']\x85R' + SETITEM + STOP
    for name, obj, want_torch, want_ls in [('memoize_after_put', memo, "{'a': 7}", 'a'),
                                           ('builtin_set_proto2', b2, "{'s': set()}", 's')]:
        with tempfile.TemporaryDirectory(prefix='sd') as d:
            path = os.path.join(d, name + '.pt')
            with open(path, 'wb') as f:
                f.write(MAGIC + PROTO + SYSINFO + obj + KEYS)
            rc, out, err = run([sys.executable, '-c',
                                'import sys, torch\nprint(torch.load(sys.argv[1]))', path])
            rc2, out2, err2 = run([STATEDICT, 'ls', path])
            ok = rc == 0 and out.strip() == want_torch and rc2 == 0
            if name == 'memoize_after_put':
                ok = ok and any(l.split()[:3] == ['a', 'int', '7'] for l in out2.splitlines())
            else:
                ok = ok and any(l.split()[:1] == ['s'] and 'set' in l for l in out2.splitlines())
            print('%-28s %s  (torch: %s; statedict ls: %s)' % (
                name, 'ok' if ok else 'FAIL', out.strip() or err.strip()[-200:],
                ' | '.join(out2.strip().splitlines()) or err2.strip()))
            fails += not ok
    return fails

def run(cmd):
    r = subprocess.run(cmd, capture_output=True, timeout=120)
    return r.returncode, r.stdout.decode(errors='replace'), r.stderr.decode(errors='replace')

def main():
    fails = 0
    n = 0
    for name, data, expect_marker, needle, why in cases('MARKER'):
        n += 1
        with tempfile.TemporaryDirectory(prefix='sd') as d:
            marker = os.path.join(d, 'm')
            # rebuild with the real marker path (kept short: it must fit a tar name field)
            data = dict((c[0], c[1]) for c in cases(marker))[name]
            path = os.path.join(d, name + '.pt')
            with open(path, 'wb') as f:
                f.write(data)
            problems = []
            # statedict first: it must never create the marker
            for sub in ('ls', 'scan', 'verify'):
                rc, out, err = run([STATEDICT, sub, path])
                if os.path.exists(marker):
                    problems.append('statedict %s created the marker' % sub)
                if rc == 0:
                    problems.append('statedict %s exited 0' % sub)
                if sub == 'verify' and ': OK' in out:
                    problems.append('verify printed OK')
                if sub == 'scan' and ', 0 refused' in out and 'incomplete' not in out:
                    problems.append('scan printed it as clean: ' + out.strip())
                if path not in err and path not in out:
                    problems.append('statedict %s does not name the file: %s' % (sub, err.strip()))
                if sub == 'ls' and needle not in err:
                    problems.append('ls message lacks %r: %s' % (needle, err.strip()))
            code = 'import sys, torch\ntorch.load(sys.argv[1])\n'
            rc, out, err = run([sys.executable, '-c', code, path])
            got = os.path.exists(marker)
            if got != expect_marker:
                problems.append('torch.load %s the payload (exit %d: %s)' % (
                    'ran' if got else 'did not run', rc, err.strip().splitlines()[-1:] ))
            status = 'FAIL' if problems else 'ok'
            print('%-28s %s  (%s; torch %s)' % (name, status, why,
                                               'ran the payload' if got else 'ran nothing'))
            for p in problems:
                print('    ' + p)
            fails += bool(problems)
    fails += agreements()
    print('%d cases, %d failed' % (n, fails))
    return 1 if fails else 0

if __name__ == '__main__':
    sys.exit(main())
