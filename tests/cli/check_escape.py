#!/usr/bin/env python3
"""
check_escape.py STATEDICT DIR - nothing from a file reaches the terminal unescaped.

Writes (standard library only) checkpoints whose keys, str and bytes values, global names and
archive folder hold terminal escape sequences (ESC [ ... m, OSC ... BEL), BEL, C1 controls
(U+009B, the one-character CSI), newlines that would forge output lines, lone surrogates and
bytes that are not UTF-8, then runs every statedict command over them and checks that
stdout and stderr hold only valid UTF-8 without control characters other than newline and
tab, without C1 controls, and that the escaped forms of the hostile text are what is shown.
Also checks that `dump --json` is valid JSON that gives back the exact strs (lone surrogates
included) and that `convert` keeps them.
"""
import io, json, os, struct, subprocess, sys, zipfile

tool, out = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)

# ---- a tiny pickle assembler (protocol 2) -------------------------------------------------------
def G(mod, name):                                                   # GLOBAL, raw bytes allowed
    return b'c' + mod + b'\n' + name + b'\n'
def U(s):                                                           # BINUNICODE of a str or raw bytes
    b = s if isinstance(s, bytes) else s.encode('utf-8', 'surrogatepass')
    return b'X' + struct.pack('<I', len(b)) + b
def BB(b): return b'C' + bytes([len(b)]) + b                        # SHORT_BINBYTES
def T(*items): return b'(' + b''.join(items) + b't'
P2, STOP, REDUCE, SETITEM, FALSE = b'\x80\x02', b'.', b'R', b's', b'\x89'
EMPTY_DICT = b'}'
ODICT = G(b'collections', b'OrderedDict') + b')' + REDUCE

def tensor(key, numel):
    pid = T(U('storage'), G(b'torch', b'FloatStorage'), U(key), U('cpu'), b'K' + bytes([numel])) + b'Q'
    return (G(b'torch._utils', b'_rebuild_tensor_v2') + b'(' + pid + b'K\x00' + T(b'K' + bytes([numel])) +
            T(b'K\x01') + FALSE + ODICT + b't' + REDUCE)

def dict_of(entries):
    return EMPTY_DICT + b''.join(U(k) + v + SETITEM for k, v in entries)

def torch_zip(pkl, prefix, storages):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', zipfile.ZIP_STORED) as z:
        z.writestr(prefix + '/data.pkl', pkl)
        for k, data in storages.items():
            z.writestr(prefix + '/data/' + k, data)
        z.writestr(prefix + '/version', b'3\n')
    return buf.getvalue()

RED, OSC, C1 = '\x1b[31mred', 'osc\x1b]0;pwned\x07', 'c1\u009b2J'
FORGE = 'nl\nforged.key  float32  [1]  4'
SUR_KEY, SUR_VAL = 'sur\ud800', 'val\udfff\ud83d'

def escape_pkl(changed):
    return P2 + dict_of([
        (RED, tensor('0', 2)),
        (OSC, U('v\x1b[2J\x07' + ('changed' if changed else '') + '\u009b')),
        (C1, b'K\x01'),
        (FORGE, b'K\x02'),
        (SUR_KEY, U(SUR_VAL)),
        ('bytes', BB(b'\x1b[2J\x07\x9b\xff')),
        ('nested', dict_of([('\x1b[1m', U('\u0085\x7f'))])),
    ]) + STOP

files = {
    'escape.pt': torch_zip(escape_pkl(False), 'esc\x1b[7m', {'0': struct.pack('<2f', 1, 2)}),
    'escape2.pt': torch_zip(escape_pkl(True), 'esc', {'0': struct.pack('<2f', 1, 3)}),
    # a key that is not UTF-8: the loader refuses it, as Python's unpickler does
    'badutf8.pt': torch_zip(P2 + dict_of([(b'k\xff\x1b[31m\xc2\x9b', b'K\x01')]) + STOP,
                            'bad\x1b[31m', {}),
    # a global that is refused, whose module and name hold escapes, BEL, C1 and stray bytes
    # many multi-byte keys: the output crosses stdio's buffer many times, cutting UTF-8
    # sequences between two writes, which the escaping streams must join again
    'many.pt': torch_zip(P2 + dict_of([('\u00e9\u20ac\U0001F600%d' % i, b'K\x01') for i in range(3000)]) + STOP,
                         'many', {}),
    'global.pt': torch_zip(P2 + G(b'os\x1b[2J\xc2\x9b', b'sys\x07tem\xff') + T(U('x')) + REDUCE + STOP,
                           'g\x1b]0;t\x07', {}),
}
for name, data in files.items():
    with open(os.path.join(out, name), 'wb') as f:
        f.write(data)

failures = []
def run(*args, expect=None):
    p = subprocess.run([tool, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    for stream, data in (('stdout', p.stdout), ('stderr', p.stderr)):
        try:
            text = data.decode('utf-8')
        except UnicodeDecodeError as e:
            failures.append('%s %s: not UTF-8: %s' % (' '.join(map(repr, args)), stream, e))
            continue
        bad = [c for c in text if (ord(c) < 0x20 and c not in '\n\t') or 0x7f <= ord(c) <= 0x9f]
        if bad:
            failures.append('%s %s: raw control characters %r' % (' '.join(map(repr, args)), stream, bad))
    if expect is not None and p.returncode != expect:
        failures.append('%s: exit %d, expected %d; stderr %r' % (' '.join(map(repr, args)),
                                                                  p.returncode, expect, p.stderr))
    return p

def must_contain(p, stream, text, what):
    data = (p.stdout if stream == 'stdout' else p.stderr).decode('utf-8', 'replace')
    if text not in data:
        failures.append('%s: %s lacks %r:\n%s' % (what, stream, text, data))

E = lambda n: os.path.join(out, n)
p = run('ls', E('escape.pt'), expect=0)
must_contain(p, 'stdout', '\\x1b[31mred', 'ls')
must_contain(p, 'stdout', 'c1\\x9b2J', 'ls')
must_contain(p, 'stdout', 'nl\\nforged.key', 'ls')
must_contain(p, 'stdout', 'sur\\ud800', 'ls')
must_contain(p, 'stdout', "'val\\udfff\\ud83d'", 'ls')
must_contain(p, 'stdout', "'v\\x1b[2J\\x07\\x9b'", 'ls')
must_contain(p, 'stdout', "b'\\x1b[2J\\x07\\x9b\\xff'", 'ls')
if b'forged.key' in p.stdout and any(l.startswith(b'forged.key') for l in p.stdout.split(b'\n')):
    failures.append('ls: a key forged an output line')
run('ls', '--json', E('escape.pt'), expect=0)
p = run('ls', E('many.pt'), expect=0)
keys = [l.split()[0] for l in p.stdout.decode('utf-8', 'replace').splitlines()[:-1]]
if keys != ['\u00e9\u20ac\U0001F600%d' % i for i in range(3000)]:
    failures.append('ls many.pt: keys changed, e.g. %r' % [k for k in keys if '\\x' in k][:3])
for opts in ([], ['--pretty']):
    p = run('dump', '--json', *opts, E('escape.pt'), expect=0)
    try:
        doc = json.loads(p.stdout)
        items = dict((k['value'], v) for k, v in doc['root']['items'])
        for k in (RED, OSC, C1, FORGE, SUR_KEY, 'bytes', 'nested'):
            if k not in items:
                failures.append('dump --json: key %r missing (keys %r)' % (k, list(items)))
        if items.get(SUR_KEY, {}).get('value') != SUR_VAL:
            failures.append('dump --json: %r is %r' % (SUR_VAL, items.get(SUR_KEY)))
        if items.get('bytes', {}).get('hex') != '1b5b324a079bff':
            failures.append('dump --json: bytes are %r' % items.get('bytes'))
        if items.get(OSC, {}).get('value') != 'v\x1b[2J\x07\u009b':
            failures.append('dump --json: %r' % items.get(OSC))
    except (ValueError, KeyError, TypeError) as e:
        failures.append('dump --json %s: not the expected JSON (%s): %r' % (opts, e, p.stdout[:300]))
p = run('show', E('escape.pt'), 'nested', expect=0)
must_contain(p, 'stdout', "'\\x85\\x7f'", 'show nested')
p = run('show', E('escape.pt'), '\\x1b[31mred', expect=0)
must_contain(p, 'stdout', '1., 2.', 'show tensor')
p = run('show', E('escape.pt'), 'nope\x1b[31m', expect=1)
p = run('diff', E('escape.pt'), E('escape2.pt'), expect=1)
must_contain(p, 'stdout', '\\x1b[31mred', 'diff')
run('verify', E('escape.pt'), expect=0)
p = run('scan', E('escape.pt'), E('global.pt'), expect=1)
must_contain(p, 'stdout', 'os\\x1b[2J\\x9b.sys\\x07tem\\xff', 'scan')
conv = E('converted.pt')
run('convert', E('escape.pt'), conv, expect=0)
p = run('dump', '--json', conv, expect=0)
try:
    items = dict((k['value'], v) for k, v in json.loads(p.stdout)['root']['items'])
    if items.get(SUR_KEY, {}).get('value') != SUR_VAL or FORGE not in items:
        failures.append('convert changed the strs: %r' % list(items))
except (ValueError, KeyError, TypeError) as e:
    failures.append('dump of the converted file: %s' % e)
for bad in ('badutf8.pt', 'global.pt'):
    for args in (['ls'], ['dump', '--json'], ['show', '--', 'x'], ['verify'], ['convert']):
        extra = [E('out.pt')] if args == ['convert'] else []
        if args[0] == 'show':
            p = run('show', E(bad), 'x', expect=3)
        else:
            p = run(*args, E(bad), *extra, expect=1 if args == ['verify'] else 3)
        if bad == 'global.pt':
            must_contain(p, 'stderr', 'g\\x1b]0;t\\x07',
                         '%s %s (the record)' % (args[0], bad))
    p = run('diff', E(bad), E('escape.pt'), expect=3)
if failures:
    print('\n'.join(failures))
    sys.exit(1)
print('all outputs escaped')
