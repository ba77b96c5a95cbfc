"""Files the real safetensors package writes, read by statedict (issue 12, reading).

Usage: read_interop.py STATEDICT ST_READ_META WORKDIR   (run with a torch generation's python)

1. For every dtype the installed torch has and safetensors.torch.save_file writes, tensors of
   random bytes (every bit pattern: NaN payloads, -0, subnormals; bool 0/1), of several shapes
   (0-dim, empty, 3-D), in one file with `__metadata__`: `statedict dump --json` (mapped and
   --copy) gives each tensor's dtype, shape and the sha256 of its bytes exactly as the tensor
   safetensors.torch.load_file returns; the key order is load_file's (0.8: data-offset order);
   `statedict ls` lists the same keys, dtypes and shapes; the library's sdict_doc_metadata
   (printed by st_read_meta) gives the metadata, in the file's order.
2. Hand-built files (struct + json, no safetensors) for the dtypes no installed torch has
   (F4 with an odd last dimension, F6_E2M3, F6_E3M2; and F8_E8M0, F4 even, FNUZ where this torch
   lacks them), checked by raw bytes; where this torch's safe_open reads them, statedict's bytes
   equal its tensor's bytes.
"""
import hashlib, json, os, random, struct, subprocess, sys

try:
    import torch
    import safetensors
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file
except ImportError as e:
    print('skip: %s' % e)
    sys.exit(77)

BIN, META, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(WORK, exist_ok=True)
rng = random.Random(12)
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print('FAIL:', what)


def raw_bytes(t):
    t = t.contiguous()
    if t.numel() == 0:
        return b''
    return bytes(t.view(-1).view(torch.uint8).tolist()) if t.dtype != torch.uint8 else bytes(t.view(-1).tolist())


def tensor_of(dt, shape):
    n = 1
    for d in shape:
        n *= d
    if dt == torch.bool:
        return torch.tensor([rng.random() < 0.5 for _ in range(n)], dtype=torch.bool).reshape(shape)
    size = torch.empty(0, dtype=dt).element_size()
    data = bytearray(rng.getrandbits(8) for _ in range(n * size))
    if n == 0:
        return torch.empty(shape, dtype=dt)
    return torch.frombuffer(data, dtype=torch.uint8).view(dt).reshape(shape).clone()


def statedict(*args):
    p = subprocess.run([BIN] + list(args), capture_output=True)
    if p.returncode != 0:
        raise SystemExit('statedict %s failed (%d): %s' % (' '.join(args), p.returncode, p.stderr.decode()))
    return p.stdout.decode()


def dump_tensors(path, copy=False):
    doc = json.loads(statedict('dump', '--json', *(['--copy'] if copy else []), path))
    check(doc['format'] == 'safetensors', '%s: format %s' % (path, doc['format']))
    out = []
    for k, v in doc['root']['items']:
        out.append((k['value'], v['dtype'], v['shape'], v['sha256']))
    return out


# ---- the library's metadata (sdict_doc_metadata), printed by st_read_meta ---------------------
def lib_metadata(path):
    p = subprocess.run([META, path], capture_output=True)
    assert p.returncode == 0, 'st_read_meta %s: %s' % (path, p.stderr.decode())
    md = json.loads(p.stdout)
    return None if md is None else [tuple(kv) for kv in md]


# ---- 1. save_file output, every dtype -------------------------------------------------------
names = ['float64', 'float32', 'float16', 'bfloat16', 'int64', 'int32', 'int16', 'int8', 'uint8',
         'uint16', 'uint32', 'uint64', 'bool', 'complex64', 'float8_e4m3fn', 'float8_e5m2',
         'float8_e4m3fnuz', 'float8_e5m2fnuz', 'float8_e8m0fnu', 'float4_e2m1fn_x2']
written, refused = [], []
tensors = {}
for name in names:
    dt = getattr(torch, name, None)
    if dt is None:
        refused.append('%s (no such torch dtype)' % name)
        continue
    probe = os.path.join(WORK, 'probe.safetensors')
    try:
        save_file({'x': tensor_of(dt, (2,))}, probe)
        load_file(probe)
    except Exception as e:
        refused.append('%s (%s)' % (name, str(e).splitlines()[0][:60]))
        continue
    written.append(name)
    for shape in [(3, 4), (), (0, 2), (2, 1, 3)]:
        if name == 'float4_e2m1fn_x2' and shape == ():
            continue  # save_file writes it as F4 of shape [], 4 bits: it refuses that itself
        tensors['%s.%s' % (name, 'x'.join(map(str, shape)) or 'scalar')] = tensor_of(dt, shape)
metadata = {'format': 'pt', 'z_last': 'zz', 'a_first': 'h\u00e9llo \u2603', 'empty': '', 'json': '{"a": [1]}'}
path = os.path.join(WORK, 'all_dtypes.safetensors')
save_file(tensors, path, metadata=metadata)
ref = load_file(path)
with safe_open(path, 'pt') as f:
    ref_md = f.metadata()
print('safetensors %s, torch %s: %d dtypes written (%s); not written: %s' % (
    safetensors.__version__, torch.__version__, len(written), ', '.join(written), ', '.join(refused) or '-'))

for copy in (False, True):
    got = dump_tensors(path, copy)
    keys = [g[0] for g in got]
    if tuple(int(x) for x in safetensors.__version__.split('.')[:2]) >= (0, 8):
        check(keys == list(ref), 'key order %s != load_file order %s' % (keys[:5], list(ref)[:5]))
    else:  # 0.4.x load_file returns the keys sorted by name; statedict keeps the data order
        check(sorted(keys) == sorted(ref), 'keys differ')
    for k, dtype, shape, sha in got:
        t = ref[k]
        check(dtype == str(t.dtype).replace('torch.', ''), '%s: dtype %s != %s' % (k, dtype, t.dtype))
        check(shape == list(t.shape), '%s: shape %s != %s' % (k, shape, list(t.shape)))
        check(sha == hashlib.sha256(raw_bytes(t)).hexdigest(), '%s: bytes differ (copy=%s)' % (k, copy))
# convert to a torch file: the dtypes torch 1.13 lacks are named in a warning; a file of only
# the old dtypes gets none
for keys, want in ((list(ref), 'float8' in ' '.join(written)), (['float32.3x4'], False)):
    sub = os.path.join(WORK, 'sub.safetensors')
    save_file({k: ref[k] for k in keys}, sub)
    p = subprocess.run([BIN, 'convert', sub, os.path.join(WORK, 'sub.pt')], capture_output=True)
    err = p.stderr.decode()
    check(p.returncode == 0, 'convert to .pt: %s' % err)
    check(('torch 1.13 does not have' in err) == want,
          'convert warning about dtypes torch 1.13 lacks: want %s, stderr %r' % (want, err))
# ls: one line per tensor, key dtype shape; then the summary line, then one line per metadata entry
out_lines = statedict('ls', path).splitlines()
summary = [i for i, l in enumerate(out_lines) if ' tensors, ' in l and ' format safetensors' in l]
check(len(summary) == 1, 'ls: one summary line naming the format')
lines = [l.split() for l in out_lines[:summary[-1] if summary else -1]]

check([l[0] for l in lines] == [g[0] for g in got], 'ls keys differ from dump keys')
for l in lines:
    t = ref[l[0]]
    check(l[1] == str(t.dtype).replace('torch.', ''), 'ls %s: dtype %s' % (l[0], l[1]))
    check(json.loads(' '.join(l[2:-1])) == list(t.shape), 'ls %s: shape %s' % (l[0], l[2:-1]))
    check(int(l[-1]) == t.numel() * t.element_size(), 'ls %s: bytes %s' % (l[0], l[-1]))
md = lib_metadata(path)
check(md is not None and dict(md) == ref_md, 'metadata %s != %s' % (md, ref_md))
# the file's order (the Rust writer keeps the metadata map as given, 0.8) or, in 0.4.5, a
# HashMap's: either way statedict keeps the order of the bytes
hdr = open(path, 'rb').read()
hlen = struct.unpack('<Q', hdr[:8])[0]
file_md = json.loads(hdr[8:8 + hlen])['__metadata__']
check(md == list(file_md.items()), 'metadata order %s != file order %s' % (md, list(file_md)))
# ls: after the summary line, one line per metadata entry (reprs), in the file's order
check(summary and out_lines[summary[-1] + 1:] == ['metadata %r: %r' % kv for kv in file_md.items()],
      'ls: the metadata lines after the summary %s' % out_lines[-6:])
print('save_file file: %d tensors, %d metadata entries: values, order and metadata equal' % (len(got), len(md or [])))

# ---- 2. hand-built files for sub-byte and newer dtypes --------------------------------------
def build(entries):
    hdr, data = {}, b''
    for name, dtype, shape, nbytes in entries:
        payload = bytes(rng.getrandbits(8) for _ in range(nbytes))
        hdr[name] = {'dtype': dtype, 'shape': shape, 'data_offsets': [len(data), len(data) + nbytes]}
        data += payload
    h = json.dumps(hdr).encode()
    return struct.pack('<Q', len(h)) + h + data, hdr, data

entries = [('f4_odd', 'F4', [2, 3], 3), ('f4_even', 'F4', [3, 4], 6), ('f4_empty', 'F4', [0], 0),
           ('f6a', 'F6_E2M3', [4, 2], 6), ('f6b', 'F6_E3M2', [8], 6), ('f6_empty', 'F6_E3M2', [2, 0], 0),
           ('e8m0', 'F8_E8M0', [5], 5), ('fnuz_a', 'F8_E4M3FNUZ', [3], 3), ('fnuz_b', 'F8_E5M2FNUZ', [2, 2], 4)]
want = {'f4_odd': ('float4_e2m1fn', [2, 3]), 'f4_even': ('float4_e2m1fn_x2', [3, 2]),
        'f4_empty': ('float4_e2m1fn_x2', [0]), 'f6a': ('float6_e2m3fn', [4, 2]),
        'f6b': ('float6_e3m2fn', [8]), 'f6_empty': ('float6_e3m2fn', [2, 0]),
        'e8m0': ('float8_e8m0fnu', [5]), 'fnuz_a': ('float8_e4m3fnuz', [3]),
        'fnuz_b': ('float8_e5m2fnuz', [2, 2])}
blob, hdr, data = build(entries)
path = os.path.join(WORK, 'hand_built.safetensors')
open(path, 'wb').write(blob)
got = {k: (d, s, h) for k, d, s, h in dump_tensors(path)}
for name, dtype, shape, nbytes in entries:
    b, e = hdr[name]['data_offsets']
    check(got[name][:2] == want[name], '%s: %s != %s' % (name, got[name][:2], want[name]))
    check(got[name][2] == hashlib.sha256(data[b:e]).hexdigest(), '%s: raw bytes differ' % name)
# where this safetensors + torch read them too, the bytes are the same
agree = []
try:
    f = safe_open(path, 'pt')
except Exception as e:  # 0.4.5 refuses the whole header for a dtype it does not know
    print('safe_open refuses the hand-built file: %s' % str(e).splitlines()[0])
    f = None
if f is not None:
    for name in hdr:
        try:
            t = f.get_tensor(name)
        except Exception:
            continue
        b, e = hdr[name]['data_offsets']
        check(raw_bytes(t) == data[b:e], '%s: safe_open bytes differ' % name)
        check([str(t.dtype).replace('torch.', ''), list(t.shape)] == list(want[name]),
              '%s: safe_open gives %s %s' % (name, t.dtype, list(t.shape)))
        agree.append(name)
print('hand-built file: %d tensors by raw bytes; safe_open reads %s the same' % (len(entries), ', '.join(agree) or 'none'))

# ---- 3. no save_file output is taken for a pickle polyglot ---------------------------------
# statedict runs its pickle machine over every safetensors file from byte 0 (torch.load reads a
# file that is no zip or tar as a pickle stream) and refuses the file when Python could read on
# where the machine stops. A header length's low byte is often an opcode (MARK, PUT, BINUNICODE,
# PROTO, NEWTRUE...), so files of every header length mod 256, with names and values at random,
# must all still read as safetensors.
parts = ['model', 'layers', 'self_attn', 'q_proj', 'weight', 'bias', 'norm', 'embed_tokens',
         'decoder', 'block', 'conv', 'running_mean', 'num_batches_tracked', 'Rx', 'cls', 'dense']
sweep = os.path.join(WORK, 'sweep')
os.makedirs(sweep, exist_ok=True)
low_bytes, refused = set(), []
for i in range(400):
    sd = {}
    for _ in range(rng.randint(1, 40)):
        name = '.'.join(rng.choice(parts) if rng.random() < .8 else str(rng.randint(0, 99))
                        for _ in range(rng.randint(1, 6)))
        dt = rng.choice([torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.uint8,
                         torch.bool, torch.float64])
        sd[name] = tensor_of(dt, [rng.randint(0, 6) for _ in range(rng.randint(0, 3))])
    path = os.path.join(sweep, 's%03d.safetensors' % i)
    save_file(sd, path, metadata={'format': 'pt'} if rng.random() < .5 else None)
    low_bytes.add(open(path, 'rb').read(1)[0])
    p = subprocess.run([BIN, 'ls', path], capture_output=True)
    if p.returncode != 0:
        refused.append('%s: %s' % (path, p.stderr.decode()[:300]))
check(not refused, 'save_file outputs refused: %s' % refused[:3])
check(len(low_bytes) == 32, 'header lengths cover %d of the 32 low bytes' % len(low_bytes))
print('polyglot probe: %d save_file outputs, %d header-length low bytes, %d refused'
      % (400, len(low_bytes), len(refused)))

if failures:
    print('%d failures' % len(failures))
    sys.exit(1)
print('OK')
