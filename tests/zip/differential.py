#!/usr/bin/env python3
"""Zip differentials against real torch: files where a naive reading of the container is a clean
state_dict but torch's reader (caffe2/serialize/inline_container.cc over miniz) finds another
structure whose pickle runs code. For each case this script builds the file in a throwaway
folder, runs torch.load(path, weights_only=False) (torch 1.13's default; torch 2.6+ must be
asked, else its restricted unpickler refuses the payload it reached) and checks whether the
payload wrote its marker file, then checks that `statedict ls`, `scan` and `verify` all refuse
the file (non-zero exit, no "OK"/clean verdict, the message naming the file and saying
"ambiguous").

Usage: differential.py STATEDICT
Exit 0 when every case behaves as listed in CASES, 1 otherwise, 77 when torch is missing.

Each case says whether torch is expected to run the payload ("torch": True: a real
differential) or whether torch reads the same structure as statedict ("torch": False: the rule
protects other zip readers -- Python's zipfile, unzip, streaming readers -- and torch's load
must then return the clean state_dict). A case expected to execute that does not, or the
reverse, fails the test, so the list stays honest.
"""
import io, os, struct, subprocess, sys, tempfile, zlib

try:
    import torch
except ImportError:
    print("skipping: this python cannot import torch")
    sys.exit(77)

STATEDICT = sys.argv[1]
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL " + msg)


# ---- records ------------------------------------------------------------------------------------
def clean_records():
    """The records of a real torch.save of a small state_dict, relative to the archive folder."""
    import zipfile
    buf = io.BytesIO()
    torch.save({'w': torch.arange(4, dtype=torch.float32)}, buf)
    out = []
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        for info in z.infolist():
            out.append((info.filename.split('/', 1)[1], z.read(info)))
    return out


def payload_pickle(marker):
    """Protocol-2 pickle calling os.system('touch MARKER') (resolved by torch's unpickler)."""
    cmd = ('touch ' + marker).encode()
    return b'\x80\x02cos\nsystem\nX' + struct.pack('<I', len(cmd)) + cmd + b'\x85R.'


# ---- a zip writer with every field under control -----------------------------------------------
class Rec:
    def __init__(self, name, data, **kw):
        self.name, self.data = name.encode(), data
        self.crc = zlib.crc32(data)
        self.kw = kw
        self.offset = None


def local(r):
    """Local header + name + extra + payload (+ descriptor). kw: flags, lmethod, lcrc, lsize,
    lname, lextra, desc (bytes appended after the payload)."""
    kw = r.kw
    flags = kw.get('flags', 0)
    name = kw.get('lname', r.name)
    extra = kw.get('lextra', b'')
    h = struct.pack('<IHHHHHIIIHH', 0x04034b50, 20, flags, kw.get('lmethod', 0), 0, 0,
                    kw.get('lcrc', r.crc), kw.get('lsize', len(r.data)), kw.get('lsize', len(r.data)),
                    len(name), len(extra))
    return h + name + extra + r.data + kw.get('desc', b'')


def central(r):
    kw = r.kw
    return struct.pack('<IHHHHHHIIIHHHHHII', 0x02014b50, 20, 20, kw.get('flags', 0), 0, 0, 0,
                       r.crc, len(r.data), len(r.data), len(r.name), 0, 0, 0, 0, 0,
                       r.offset) + r.name


def layout(recs, start=0):
    """Local records back to back from offset start; returns their bytes."""
    out = b''
    for r in recs:
        r.offset = start + len(out)
        out += local(r)
    return out


def eocd(n, cd_size, cd_off, comment=b''):
    return struct.pack('<IHHHHIIH', 0x06054b50, 0, 0, n, n, cd_size, cd_off, len(comment)) + comment


def archive(recs, comment=b''):
    body = layout(recs)
    cd = b''.join(central(r) for r in recs)
    return body + cd + eocd(len(recs), len(cd), len(body), comment)


def torch_recs(pkl, rest, folder='archive'):
    """data.pkl first (as torch writes it), then the other records."""
    return [Rec(folder + '/data.pkl', pkl)] + [Rec(folder + '/' + n, d) for n, d in rest]


def two_archives(mal, clean):
    """The clean archive's records (a) then the payload's (b), laid out back to back, and both
    central directories (to follow the records) with their offsets."""
    a = torch_recs(clean['data.pkl'], [(n, d) for n, d in clean.items() if n != 'data.pkl'])
    b = torch_recs(mal, [('version', clean['version'])])
    body = layout(a)
    body += layout(b, len(body))
    cd_a = b''.join(central(r) for r in a)
    cd_b = b''.join(central(r) for r in b)
    return a, b, body, cd_a, cd_b, len(body), len(body) + len(cd_a)


# ---- the cases ----------------------------------------------------------------------------------
def case_eocd_in_comment(mal, clean):
    """Archive A (clean) is what an end-record search that honours the comment length finds;
    archive B (payload) is the one miniz finds: the last PK\\5\\6 with 22 bytes after it,
    hidden in A's comment."""
    a, b, body, cd_a, cd_b, cd_a_off, cd_b_off = two_archives(mal, clean)
    fake = eocd(len(b), len(cd_b), cd_b_off) + b'!'   # says no comment, yet a byte follows
    return body + cd_a + cd_b + eocd(len(a), len(cd_a), cd_a_off, fake)


def case_zip64_disagrees(mal, clean):
    """The classic end record points at the clean directory, the ZIP64 one (which miniz prefers
    whenever its locator is there) at the payload's."""
    a, b, body, cd_a, cd_b, cd_a_off, cd_b_off = two_archives(mal, clean)
    z64_off = cd_b_off + len(cd_b)
    z64 = struct.pack('<IQHHIIQQQQ', 0x06064b50, 44, 0x031E, 45, 0, 0, len(b), len(b), len(cd_b),
                      cd_b_off)
    loc = struct.pack('<IIQI', 0x07064b50, 0, z64_off, 1)
    return body + cd_a + cd_b + z64 + loc + eocd(len(a), len(cd_a), cd_a_off)


def case_name_case(mal, clean, first):
    """archive/data.pkl (clean) and archive/DATA.PKL (payload): miniz compares names
    case-insensitively. `first` puts the payload's entry first or last in the directory."""
    recs = [Rec('archive/version', clean['version'])]
    recs += [Rec('archive/' + n, d) for n, d in clean.items() if n != 'version']
    evil = Rec('archive/DATA.PKL', mal)
    recs = recs[:1] + [evil] + recs[1:] if first else recs + [evil]
    return archive(recs)


def case_duplicate(mal, clean, first):
    recs = [Rec('archive/version', clean['version'])]
    recs += [Rec('archive/' + n, d) for n, d in clean.items() if n != 'version']
    evil = Rec('archive/data.pkl', mal)
    recs = recs[:1] + [evil] + recs[1:] if first else recs + [evil]
    return archive(recs)


def case_outside_folder(mal, clean):
    """ARCHIVE/data.pkl beside archive/version: outside the folder by exact comparison, inside
    it for miniz's case-insensitive lookup."""
    recs = [Rec('archive/version', clean['version']), Rec('ARCHIVE/data.pkl', mal)]
    recs += [Rec('archive/' + n, d) for n, d in clean.items() if n not in ('version', 'data.pkl')]
    return archive(recs)


def case_local_name(mal, clean):
    """The local header of data.pkl names another record; the central directory (which torch
    and statedict follow) has the clean one."""
    recs = torch_recs(clean['data.pkl'], [(n, d) for n, d in clean.items() if n != 'data.pkl'])
    recs[0].kw['lname'] = b'archive/data.pkX'
    return archive(recs)


def case_local_sizes(mal, clean):
    """Local header sizes/CRC that disagree with the central directory (no descriptor)."""
    recs = torch_recs(clean['data.pkl'], [(n, d) for n, d in clean.items() if n != 'data.pkl'])
    recs[0].kw.update(lcrc=0x1234, lsize=len(recs[0].data) + 1)
    return archive(recs)


def case_descriptor(mal, clean):
    """Flag bit 3 with a data descriptor whose CRC and sizes disagree with the central
    directory's."""
    recs = torch_recs(clean['data.pkl'], [(n, d) for n, d in clean.items() if n != 'data.pkl'])
    r = recs[0]
    r.kw.update(flags=8, lcrc=0, lsize=0,
                desc=struct.pack('<IIII', 0x08074b50, 0xdeadbeef, len(r.data) + 4, len(r.data) + 4))
    return archive(recs)


def case_hidden_prefix(mal, clean):
    """A local header with the payload pickle before the archive proper, which no central entry
    describes: streaming readers (and torch's PK\\3\\4 check) see it first; miniz follows the
    central directory's absolute offsets."""
    hidden = Rec('archive/data.pkl', mal)
    pre = local(hidden)
    recs = torch_recs(clean['data.pkl'], [(n, d) for n, d in clean.items() if n != 'data.pkl'])
    body = pre + layout(recs, len(pre))
    cd = b''.join(central(r) for r in recs)
    return body + cd + eocd(len(recs), len(cd), len(body))


# name, builder, does torch 1.13 run the payload?
CASES = [
    ('eocd_in_comment', case_eocd_in_comment, True),
    ('zip64_disagrees', case_zip64_disagrees, True),
    ('name_case_first', lambda m, c: case_name_case(m, c, True), None),
    ('name_case_last', lambda m, c: case_name_case(m, c, False), None),
    ('duplicate_first', lambda m, c: case_duplicate(m, c, True), None),
    ('duplicate_last', lambda m, c: case_duplicate(m, c, False), None),
    ('outside_folder_case', case_outside_folder, False),
    ('local_name', case_local_name, False),
    ('local_sizes', case_local_sizes, False),
    ('descriptor', case_descriptor, False),
    ('hidden_prefix', case_hidden_prefix, False),
]
# Collisions: which of two equal names miniz's binary search lands on depends on its heap sort;
# at least one order of each pair must run the payload.
PAIRS = [('name_case_first', 'name_case_last'), ('duplicate_first', 'duplicate_last')]


def torch_load(path):
    """'ran' if the marker appeared, 'clean' if torch returned the clean dict, else 'error'."""
    code = ('import sys, torch\n'
            'try:\n'
            '    r = torch.load(sys.argv[1], weights_only=False)\n'
            'except Exception as e:\n'
            '    print("error", type(e).__name__, str(e)[:200]); sys.exit(0)\n'
            'ok = isinstance(r, dict) and list(r) == ["w"] and r["w"].tolist() == [0.0, 1.0, 2.0, 3.0]\n'
            'print("clean" if ok else "other %r" % (r,))\n')
    p = subprocess.run([sys.executable, '-c', code, path], capture_output=True, text=True,
                       timeout=120)
    return p.stdout.strip() or ('error rc=%d %s' % (p.returncode, p.stderr[-200:]))


def run(*args):
    p = subprocess.run([STATEDICT] + list(args), capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


clean = dict(clean_records())
ran = {}
with tempfile.TemporaryDirectory(prefix='sdict_zipdiff_') as tmp:
    for name, build, expect in CASES:
        marker = os.path.join(tmp, name + '.marker')
        path = os.path.join(tmp, name + '.pt')
        with open(path, 'wb') as f:
            f.write(build(payload_pickle(marker), clean))
        verdict = torch_load(path)
        ran[name] = os.path.exists(marker)
        print('%-22s torch: %-5s %s' % (name, 'RAN' if ran[name] else 'no', verdict))
        if expect is True:
            check(ran[name], name + ': torch was expected to run the payload: ' + verdict)
        elif expect is False:
            check(not ran[name], name + ': torch ran the payload, not listed as a differential')
        for cmd in (['ls'], ['scan'], ['verify']):
            rc, out, err = run(*(cmd + [path]))
            check(rc != 0, '%s %s: exit 0, want a refusal: %s' % (cmd[0], name, out))
            check(path in err and 'ambiguous' in err,
                  '%s %s: message does not name the file and the ambiguity: %s' % (cmd[0], name, err))
            check(': OK' not in out and 'ALLOWED' not in out,
                  '%s %s: printed as clean: %s' % (cmd[0], name, out))
    for a, b in PAIRS:
        check(ran[a] or ran[b], '%s/%s: torch ran neither order: not a real differential' % (a, b))
print('%d cases, %d failures' % (len(CASES), len(failures)))
sys.exit(1 if failures else 0)
