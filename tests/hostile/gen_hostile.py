#!/usr/bin/env python3
"""Generates the hostile corpus: files that try to run code, lie about sizes, or exhaust memory.

Usage: gen_hostile.py OUTDIR MARKER
Writes OUTDIR/<case>.pt and OUTDIR/manifest.tsv with lines "case<TAB>statuses" where statuses is
a comma-separated set of acceptable sdict_status names (never SDICT_OK). Code-execution payloads
run `touch MARKER`: a loader that executed anything would leave the marker behind.

Needs only the Python standard library: the pickles are assembled opcode by opcode (no pickle
module, nothing here is ever unpickled), the archives with zipfile and struct.
"""
import io, math, os, struct, sys, zipfile

out, marker = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)
CMD = 'touch ' + marker
cases = []

# ---- a tiny pickle assembler --------------------------------------------------------------------
def G(mod, name): return b'c' + mod.encode() + b'\n' + name.encode() + b'\n'       # GLOBAL
def U(s):                                                                           # BINUNICODE
    b = s.encode(); return b'X' + struct.pack('<I', len(b)) + b
def SU(s): b = s.encode(); return b'\x8c' + bytes([len(b)]) + b                      # SHORT_BINUNICODE
def I(n):
    if 0 <= n < 256: return b'K' + bytes([n])
    if -2**31 <= n < 2**31: return b'J' + struct.pack('<i', n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, 'little', signed=True)
    return b'\x8a' + bytes([len(raw)]) + raw                                        # LONG1
def T(*items):
    return b'(' + b''.join(items) + b't'                                            # MARK..TUPLE
P2, STOP, MARK, REDUCE, BUILD = b'\x80\x02', b'.', b'(', b'R', b'b'
EMPTY_DICT, EMPTY_LIST, SETITEM, NONE, TRUE, FALSE = b'}', b']', b's', b'N', b'\x88', b'\x89'
ODICT = G('collections', 'OrderedDict') + b')' + REDUCE

def pid(key, numel, cls='FloatStorage'):
    return T(U('storage'), G('torch', cls), U(key), U('cpu'), I(numel)) + b'Q'      # BINPERSID

def tensor(key, numel, offset, size, stride, cls='FloatStorage'):
    return (G('torch._utils', '_rebuild_tensor_v2') + MARK + pid(key, numel, cls) + I(offset) +
            T(*[I(s) for s in size]) + T(*[I(s) for s in stride]) + FALSE + ODICT + b't' + REDUCE)

def state_dict(*entries):
    body = b''.join(U(k) + v + SETITEM for k, v in entries)
    return P2 + EMPTY_DICT + body + STOP

# ---- containers ---------------------------------------------------------------------------------
def plain_zip(entries):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return buf.getvalue()

def torch_zip(pkl, storages=None, prefix='archive', extra=None):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', zipfile.ZIP_STORED) as z:
        z.writestr(prefix + '/data.pkl', pkl)
        for k, data in (storages or {}).items():
            z.writestr(prefix + '/data/' + k, data)
        for name, data in (extra or {}).items():
            z.writestr(name, data)
        z.writestr(prefix + '/version', b'3\n')
    return buf.getvalue()

MAGIC = P2 + b'\x8a\x0a' + (0x1950a86a20f9469cfc6c).to_bytes(10, 'little') + STOP
PROTO = P2 + b'M\xe9\x03' + STOP
SYSINFO = (P2 + EMPTY_DICT + U('protocol_version') + b'M\xe9\x03' + SETITEM + U('little_endian') +
           TRUE + SETITEM + U('type_sizes') + EMPTY_DICT + U('short') + I(2) + SETITEM + U('int') +
           I(4) + SETITEM + U('long') + I(4) + SETITEM + SETITEM + STOP)

def legacy_pid(key, numel):
    return T(U('storage'), G('torch', 'FloatStorage'), U(key), U('cpu'), I(numel), NONE) + b'Q'

def legacy(obj_pkl, keys=(), payloads=(), magic=MAGIC, proto=PROTO, sysinfo=SYSINFO):
    keylist = P2 + EMPTY_LIST + MARK + b''.join(U(k) for k in keys) + b'e' + STOP
    return magic + proto + sysinfo + obj_pkl + keylist + b''.join(payloads)

def add(name, data, statuses, want=''):
    """want: words the error message must contain (manifest's optional third column)."""
    with open(os.path.join(out, name + '.pt'), 'wb') as f:
        f.write(data)
    cases.append((name, statuses + ('\t' + want if want else '')))

UNSAFE = 'SDICT_E_PICKLE_UNSAFE_GLOBAL'

# ---- 1. code execution through every opcode that can call or import ----------------------------
callables = [('os', 'system'), ('posix', 'system'), ('nt', 'system'), ('builtins', 'eval'),
             ('builtins', 'exec'), ('__builtin__', 'eval'), ('builtins', '__import__'),
             ('subprocess', 'Popen'), ('subprocess', 'check_output'), ('subprocess', 'run'),
             ('importlib', 'import_module'), ('runpy', '_run_code'), ('pty', 'spawn'),
             ('webbrowser', 'open'), ('shutil', 'rmtree'), ('pickle', 'loads'), ('_pickle', 'loads'),
             ('code', 'InteractiveInterpreter'), ('ctypes', 'CDLL')]
for mod, name in callables:
    tag = mod.strip('_') + '_' + name.strip('_')
    add('reduce_' + tag, P2 + G(mod, name) + T(U(CMD)) + REDUCE + STOP, UNSAFE)
for mod, name in [('os', 'system'), ('builtins', 'exec'), ('subprocess', 'Popen')]:
    tag = mod + '_' + name
    add('stack_global_' + tag, b'\x80\x04' + SU(mod) + SU(name) + b'\x93' + SU(CMD) + b'\x85R' + STOP, UNSAFE)
    add('inst_' + tag, b'(' + U(CMD) + b'i' + mod.encode() + b'\n' + name.encode() + b'\n' + STOP, UNSAFE)
    add('obj_' + tag, b'(' + G(mod, name) + U(CMD) + b'o' + STOP, UNSAFE)
    add('newobj_' + tag, P2 + G(mod, name) + T(U(CMD)) + b'\x81' + STOP, UNSAFE)
    add('newobj_ex_' + tag, b'\x80\x04' + G(mod, name) + T(U(CMD)) + b'}' + b'\x92' + STOP, UNSAFE)
    add('build_' + tag, P2 + G(mod, name) + EMPTY_DICT + BUILD + STOP, UNSAFE)
# getattr chains: builtins.getattr(builtins.__import__('os'), 'system')
add('getattr_chain', P2 + G('builtins', 'getattr') + T(G('builtins', '__import__') + T(U('os')) + REDUCE,
    U('system')) + REDUCE + T(U(CMD)) + REDUCE + STOP, UNSAFE)
# the global is refused even if never called (nothing is resolved lazily)
add('global_uncalled', P2 + EMPTY_DICT + U('x') + G('os', 'system') + SETITEM + STOP, UNSAFE)
# module objects and dotted names must not be resolved by walking attributes
add('module_object', P2 + G('os', 'path') + STOP, UNSAFE)
add('torch_module_object', P2 + G('torch', '_utils') + STOP, UNSAFE)
add('dotted_name', b'\x80\x04' + SU('torch._utils') + SU('_rebuild_tensor_v2.__globals__') + b'\x93' + STOP, UNSAFE)
add('dotted_builtins', b'\x80\x04' + SU('collections') + SU('OrderedDict.__init__.__globals__') + b'\x93' + STOP, UNSAFE)

# ---- 2. gadgets hidden under torch.* and numpy.* names -----------------------------------------
gadgets = [('torch', 'load'), ('torch.serialization', 'load'), ('torch.storage', '_load_from_bytes'),
           ('torch.hub', 'load'), ('torch.jit', 'load'), ('torch._utils', '_rebuild_xla_tensor'),
           ('torch._utils', '_rebuild_from_type_v2'), ('torch._tensor', '_rebuild_from_type'),
           ('torch.utils.cpp_extension', 'load_inline'), ('torch._dynamo', 'eval_frame'),
           ('torch.fx.experimental.symbolic_shapes', 'ShapeEnv'), ('torch._inductor.codecache', 'compile_file'),
           ('numpy', 'load'), ('numpy.testing._private.utils', 'runstring'), ('numpy.lib.npyio', 'load'),
           ('numpy.f2py', 'compile'), ('numpy.distutils.exec_command', 'exec_command')]
for mod, name in gadgets:
    add('gadget_' + mod.replace('.', '_') + '_' + name.strip('_'), P2 + G(mod, name) + T(U(CMD)) + REDUCE + STOP, UNSAFE)

# ---- 3. decoys: the text of a global in a string must not matter; the real global must ----------
add('decoy_hidden', P2 + EMPTY_DICT + U('torch._utils\n_rebuild_tensor_v2') + U('collections OrderedDict') +
    SETITEM + U('y') + G('os', 'system') + T(U(CMD)) + REDUCE + SETITEM + STOP, UNSAFE)

# ---- 4. the same payloads inside real containers -------------------------------------------------
add('zip_os_system', torch_zip(P2 + G('os', 'system') + T(U(CMD)) + REDUCE + STOP), UNSAFE)
add('zip_stack_global', torch_zip(b'\x80\x04' + SU('os') + SU('system') + b'\x93' + SU(CMD) + b'\x85R' + STOP), UNSAFE)
add('legacy_os_system', legacy(P2 + G('os', 'system') + T(U(CMD)) + REDUCE + STOP), UNSAFE)
add('legacy_sysinfo_payload', legacy(state_dict(), sysinfo=P2 + G('os', 'system') + T(U(CMD)) + REDUCE + STOP), UNSAFE)
add('legacy_magic_payload', legacy(state_dict(), magic=P2 + G('os', 'system') + T(U(CMD)) + REDUCE + STOP), UNSAFE)

# ---- 5. structure abuse in the pickle machine ----------------------------------------------------
TYPE = 'SDICT_E_PICKLE_TYPE'
add('setitem_on_list', P2 + EMPTY_LIST + I(1) + I(2) + SETITEM + STOP, TYPE)
add('setitems_on_tuple', P2 + b')' + MARK + I(1) + I(2) + b'u' + STOP, TYPE)
add('setitem_on_tensor', torch_zip(P2 + tensor('0', 1, 0, (1,), (1,)) + I(1) + I(2) + SETITEM + STOP,
                                   {'0': b'\0' * 4}), TYPE)
add('append_on_dict', P2 + EMPTY_DICT + I(1) + b'a' + STOP, TYPE)
add('unhashable_key', P2 + EMPTY_DICT + EMPTY_LIST + I(1) + SETITEM + STOP, TYPE)
add('memo_unset', P2 + b'h\x05' + STOP, 'SDICT_E_PICKLE_STACK')
add('memo_unset_long', P2 + b'j' + struct.pack('<I', 0xfffffff0) + STOP, 'SDICT_E_PICKLE_STACK,SDICT_E_LIMIT')
add('stack_underflow', P2 + SETITEM + STOP, 'SDICT_E_PICKLE_STACK')
add('no_mark', P2 + I(1) + b't' + STOP, 'SDICT_E_PICKLE_STACK')
add('no_stop', P2 + EMPTY_DICT, 'SDICT_E_TRUNCATED')
add('unknown_opcode', P2 + b'\xff' + STOP, 'SDICT_E_PICKLE_OPCODE')
add('ext1', P2 + b'\x82\x01' + STOP, 'SDICT_E_PICKLE_OPCODE,SDICT_E_UNSUPPORTED,' + UNSAFE)
# 100,000 lists, each appended into the one before: a 100,000-deep nest
add('deep_lists', torch_zip(P2 + EMPTY_LIST + (MARK + EMPTY_LIST) * 100000 + b'e' * 100000 + STOP), 'SDICT_E_LIMIT')
add('deep_memo_nesting', torch_zip(P2 + EMPTY_LIST + b'q\x00' + b''.join(EMPTY_LIST + b'r' + struct.pack('<I', i + 1) + b'j' + struct.pack('<I', i) + b'j' + struct.pack('<I', i + 1) + b'a0' for i in range(100000)) + b'h\x00' + STOP), 'SDICT_E_LIMIT')
add('deep_marks', P2 + MARK * 100000 + STOP, 'SDICT_E_LIMIT,SDICT_E_PICKLE_STACK')
add('deep_nested_appends', P2 + (EMPTY_LIST + MARK) * 100000 + STOP, 'SDICT_E_LIMIT,SDICT_E_PICKLE_STACK')
add('huge_binunicode', P2 + b'X' + struct.pack('<I', 0xfffffff0) + b'abc' + STOP, 'SDICT_E_TRUNCATED,SDICT_E_LIMIT')
add('huge_binunicode8', b'\x80\x04\x8d' + struct.pack('<Q', 1 << 62) + b'abc' + STOP, 'SDICT_E_TRUNCATED,SDICT_E_LIMIT')
add('huge_binbytes8', b'\x80\x04\x8e' + struct.pack('<Q', (1 << 64) - 1) + b'abc' + STOP, 'SDICT_E_TRUNCATED,SDICT_E_LIMIT')
add('huge_long4', P2 + b'\x8b' + struct.pack('<i', 0x7ffffff0) + b'\x01' + STOP, 'SDICT_E_TRUNCATED,SDICT_E_LIMIT')
add('negative_long4', P2 + b'\x8b' + struct.pack('<i', -5) + STOP, 'SDICT_E_PICKLE_OPCODE,SDICT_E_TRUNCATED')
add('frame_lies', b'\x80\x04\x95' + struct.pack('<Q', 1 << 40) + EMPTY_DICT + STOP, 'SDICT_E_TRUNCATED,SDICT_E_PICKLE_OPCODE,SDICT_E_LIMIT')
# a "billion laughs" DAG: each list holds the previous one twice (memo) - 2**60 leaves if expanded
laughs = P2 + EMPTY_LIST + b'q\x00'
for i in range(60):
    laughs += EMPTY_LIST + MARK + b'h' + bytes([i]) + b'h' + bytes([i]) + b'e' + b'q' + bytes([i + 1])
add('billion_laughs', torch_zip(laughs + STOP), 'SDICT_E_LIMIT')
# an integer of 1 MiB (printing it exactly would take quadratic time)
add('huge_int', torch_zip(P2 + EMPTY_DICT + U('big') + b'\x8b' + struct.pack('<i', 1 << 20) + b'\x11' * (1 << 20) +
    SETITEM + STOP), 'SDICT_E_LIMIT')
# OrderedDict(pairs) called again and again on one memoized list of 100,000 pairs: each REDUCE
# copies them all for 7 bytes of pickle
pairs = EMPTY_LIST + MARK + b''.join(MARK + b'J' + struct.pack('<i', i) + NONE + b'l' for i in range(100000)) + b'e' + b'q\x00'
add('odict_copy_amplification', torch_zip(P2 + G('collections', 'OrderedDict') + b'q\x01' + b'0' + pairs + b'0' +
    b'h\x01h\x00\x85R0' * 2000 + EMPTY_DICT + STOP), 'SDICT_E_LIMIT')
# a callable smuggled into the result inside a tuple
add('callable_in_tuple', torch_zip(P2 + EMPTY_DICT + U('a') + MARK + G('torch._utils', '_rebuild_tensor_v2') + b'\x85l' +
    SETITEM + STOP), TYPE)
add('binpersid_not_tuple', torch_zip(P2 + I(7) + b'Q' + STOP), 'SDICT_E_PICKLE_TYPE,SDICT_E_STORAGE,SDICT_E_FORMAT')
add('persid_wrong_tag', torch_zip(P2 + T(U('module'), G('torch', 'FloatStorage'), U('0'), U('cpu'), I(1)) + b'Q' + STOP,
                                  {'0': b'\0' * 4}), 'SDICT_E_PICKLE_TYPE,SDICT_E_STORAGE,SDICT_E_UNSUPPORTED')
add('persid_unknown_storage_class', torch_zip(P2 + pid('0', 1, 'EvilStorage') + STOP, {'0': b'\0' * 4}),
    UNSAFE + ',SDICT_E_DTYPE,SDICT_E_PICKLE_TYPE')
add('rebuild_wrong_args', torch_zip(P2 + G('torch._utils', '_rebuild_tensor_v2') + T(U('x')) + REDUCE + STOP),
    'SDICT_E_PICKLE_TYPE')
add('rebuild_hooks_nonempty', torch_zip(P2 + G('torch._utils', '_rebuild_tensor_v2') + MARK + pid('0', 1) + I(0) +
    T(I(1)) + T(I(1)) + FALSE + G('collections', 'OrderedDict') + b')' + REDUCE + U('h') + G('os', 'system') +
    SETITEM + b't' + REDUCE + STOP, {'0': b'\0' * 4}), UNSAFE + ',' + TYPE)
add('codecs_encode_other', P2 + G('_codecs', 'encode') + T(U('x'), U('rot13')) + REDUCE + STOP, TYPE + ',' + UNSAFE)

# ---- 6. storages and tensor geometry -------------------------------------------------------------
ST = 'SDICT_E_STORAGE'
SH = 'SDICT_E_SHAPE,SDICT_E_STORAGE'
add('storage_shorter_than_tensor', torch_zip(state_dict(('w', tensor('0', 4, 0, (100,), (1,)))), {'0': b'\0' * 16}), ST)
add('numel_exceeds_record', torch_zip(state_dict(('w', tensor('0', 255, 0, (255,), (1,)))), {'0': b'\0' * 48}), ST)
add('numel_below_record', torch_zip(state_dict(('w', tensor('0', 2, 0, (2,), (1,)))), {'0': b'\0' * 48}), ST)
add('storage_record_missing', torch_zip(state_dict(('w', tensor('7', 2, 0, (2,), (1,))))), ST + ',SDICT_E_NOT_FOUND')
add('offset_past_storage', torch_zip(state_dict(('w', tensor('0', 4, 10, (1,), (1,)))), {'0': b'\0' * 16}), ST)
add('extent_overflow', torch_zip(state_dict(('w', tensor('0', 4, 0, (2**62, 4), (2**62, 1)))), {'0': b'\0' * 16}), SH)
add('numel_overflow', torch_zip(state_dict(('w', tensor('0', 4, 0, (2**32, 2**32, 2**32), (0, 0, 0)))), {'0': b'\0' * 16}), SH)
add('size_beyond_int64', torch_zip(state_dict(('w', tensor('0', 4, 0, (2**70,), (1,)))), {'0': b'\0' * 16}),
    SH + ',SDICT_E_LIMIT,SDICT_E_PICKLE_TYPE')
add('negative_size', torch_zip(state_dict(('w', tensor('0', 4, 0, (-1,), (1,)))), {'0': b'\0' * 16}), SH)
add('negative_stride', torch_zip(state_dict(('w', tensor('0', 4, 3, (4,), (-1,)))), {'0': b'\0' * 16}), SH)
add('negative_offset', torch_zip(state_dict(('w', tensor('0', 4, -1, (1,), (1,)))), {'0': b'\0' * 16}), SH)
add('negative_numel', torch_zip(state_dict(('w', tensor('0', -4, 0, (1,), (1,)))), {'0': b'\0' * 16}), ST + ',SDICT_E_PICKLE_TYPE')
# Rank has no fixed cap (torch saves and loads thousands of dimensions): these cases go after
# what a high rank costs instead. 64 sizes of 2 overflow the element count:
add('rank_numel_overflow', torch_zip(state_dict(('w', tensor('0', 1, 0, (2,) * 64, (0,) * 64))), {'0': b'\0' * 4}), SH)
# one memoized tuple of 100,000 ones passed as size and stride to 2,000 tensors: each REDUCE
# would copy 200,000 dimensions for 100 bytes of pickle (3.2 GB in all)
ones = T(*[I(1)] * 100000) + b'q\x00' + b'0'
rebuild_ones = (G('torch._utils', '_rebuild_tensor_v2') + MARK + pid('0', 1) + I(0) + b'h\x00h\x00' + FALSE + ODICT +
                b't' + REDUCE)
add('rank_memo_amplification', torch_zip(P2 + ones + EMPTY_LIST + MARK + rebuild_ones * 2000 + b'e' + STOP,
                                         {'0': b'\0' * 4}), 'SDICT_E_LIMIT')
# a valid tensor of 50,000 dimensions reachable 2**20 times through shared lists: whatever walks
# the result (dump, save) would visit 5e10 dimensions
rank_laughs = P2 + tensor('0', 1, 0, (1,) * 50000, (1,) * 50000) + b'q\x00'
for i in range(20):
    rank_laughs += EMPTY_LIST + MARK + b'h' + bytes([i]) + b'h' + bytes([i]) + b'e' + b'q' + bytes([i + 1])
add('rank_laughs', torch_zip(rank_laughs + STOP, {'0': b'\0' * 4}), 'SDICT_E_LIMIT')
# Constructors that copy a memoized argument again and again (adversarial review): torch.Size of
# one 20,000-int tuple 2,000 times, bytearray of one 1 MB bytes 200 times, _codecs.encode of one
# 1 MB str 200 times. Each copy counts against the input's budget.
size_arg = T(*[I(1)] * 20000) + b'q\x02'
add('size_memo_amplification', torch_zip(P2 + b'}' + G('torch', 'Size') + b'q\x01' + b'0' + size_arg +
                                         b'0' + U('k') + b']' + (b'h\x01h\x02\x85R' + b'a') * 2000 + b's' + STOP),
    'SDICT_E_LIMIT')
big_bytes = b'B' + struct.pack('<I', 10**6) + b'\0' * 10**6 + b'q\x02'
add('bytearray_memo_amplification', torch_zip(b'\x80\x03}' + G('builtins', 'bytearray') + b'q\x01' + b'0' +
                                              big_bytes + b'0' + U('k') + b']' +
                                              (b'h\x01h\x02\x85R' + b'a') * 200 + b's' + STOP), 'SDICT_E_LIMIT')
add('encode_memo_amplification', torch_zip(P2 + b'}' + G('_codecs', 'encode') + b'q\x01' + b'0' +
                                           U('a' * 10**6) + b'q\x02' + U('latin1') + b'q\x03' + b'0' + U('k') +
                                           b']' + (b'h\x01h\x02h\x03\x86R' + b'a') * 200 + b's' + STOP),
    'SDICT_E_LIMIT')
# a numpy array with a zero-sized dimension beside huge ones: no elements, but its C strides
# would overflow int64
np_zero = (G('numpy.core.multiarray', '_reconstruct') + G('numpy', 'ndarray') + T(I(0)) + b'C\x01b' + b'\x87' +
           REDUCE + MARK + I(1) + T(I(0), I(2**32), I(2**32), I(5)) +
           G('numpy', 'dtype') + T(U('f4'), FALSE, TRUE) + REDUCE +
           T(I(3), U('<'), NONE, NONE, NONE, I(-1), I(-1), I(0)) + BUILD +
           FALSE + b'B' + struct.pack('<I', 0) + b't' + BUILD)
add('numpy_empty_stride_overflow', torch_zip(P2 + b'}' + U('a') + np_zero + b's' + STOP), SH)
add('shape_stride_rank_differ', torch_zip(state_dict(('w', tensor('0', 4, 0, (2, 2), (1,)))), {'0': b'\0' * 16}), SH + ',SDICT_E_PICKLE_TYPE')
add('one_storage_two_dtypes', torch_zip(state_dict(('a', tensor('0', 4, 0, (4,), (1,))),
                                                   ('b', tensor('0', 2, 0, (2,), (1,), 'DoubleStorage'))),
                                        {'0': b'\0' * 16}), ST)

# ---- 7. zip central directories that lie ---------------------------------------------------------
good = torch_zip(state_dict(('w', tensor('0', 4, 0, (4,), (1,)))), {'0': struct.pack('<4f', 1, 2, 3, 4)})
eocd = good.rindex(b'PK\x05\x06')
cd_off = struct.unpack_from('<I', good, eocd + 16)[0]
ZC = 'SDICT_E_ZIP_CORRUPT,SDICT_E_TRUNCATED'
def patched(data, off, fmt, value):
    b = bytearray(data); struct.pack_into(fmt, b, off, value); return bytes(b)
add('zip_cd_offset_past_end', patched(good, eocd + 16, '<I', len(good) + 1000), ZC)
add('zip_cd_size_lies', patched(good, eocd + 12, '<I', 0x7fffffff), ZC)
add('zip_count_lies', patched(patched(good, eocd + 10, '<H', 500), eocd + 8, '<H', 500), ZC)
add('zip_count_zero', patched(patched(good, eocd + 10, '<H', 0), eocd + 8, '<H', 0), ZC + ',SDICT_E_NOT_FOUND,SDICT_E_FORMAT')
add('zip_multidisk', patched(good, eocd + 4, '<H', 1), 'SDICT_E_ZIP_UNSUPPORTED,SDICT_E_ZIP_CORRUPT')
# central-directory entry fields (the first entry is data.pkl)
add('zip_local_offset_past_end', patched(good, cd_off + 42, '<I', len(good) * 4), ZC)
add('zip_record_claims_1tb', patched(patched(good, cd_off + 20, '<I', 0xffffffff), cd_off + 24, '<I', 0xffffffff), ZC)
add('zip_name_length_lies', patched(good, cd_off + 28, '<H', 0xffff), ZC)
add('zip_encrypted', patched(good, cd_off + 8, '<H', 1), 'SDICT_E_ZIP_UNSUPPORTED,SDICT_E_ZIP_CORRUPT')
add('zip_bad_method', patched(good, cd_off + 10, '<H', 99), 'SDICT_E_ZIP_UNSUPPORTED,SDICT_E_ZIP_CORRUPT')
add('zip_cd_signature', patched(good, cd_off, '<I', 0x12345678), ZC)
add('zip_truncated_tail', good[:-10], ZC + ',SDICT_E_FORMAT')
add('zip_no_eocd', good[:eocd], ZC + ',SDICT_E_FORMAT')
# overlapping records: two entries pointing at the same local header
b = io.BytesIO()
with zipfile.ZipFile(b, 'w') as z:
    z.writestr('archive/data.pkl', state_dict()); z.writestr('archive/data/0', b'\0' * 16); z.writestr('archive/version', b'3\n')
ov = bytearray(b.getvalue()); e = ov.rindex(b'PK\x05\x06'); c = struct.unpack_from('<I', ov, e + 16)[0]
second = ov.index(b'PK\x01\x02', c + 4)
struct.pack_into('<I', ov, second + 42, struct.unpack_from('<I', ov, c + 42)[0])
add('zip_overlapping_records', bytes(ov), 'SDICT_E_ZIP_CORRUPT')
add('zip_entry_outside_folder', torch_zip(state_dict(), extra={'../evil/data.pkl': b'x'}), 'SDICT_E_ZIP_CORRUPT')
add('zip_two_folders', torch_zip(state_dict(), extra={'other/data.pkl': P2 + G('os', 'system') + STOP}), 'SDICT_E_ZIP_CORRUPT')
add('zip_empty_archive', plain_zip({}), ZC + ',SDICT_E_FORMAT,SDICT_E_NOT_FOUND')
add('zip_no_data_pkl', plain_zip({'archive/version': b'3\n'}), 'SDICT_E_FORMAT,SDICT_E_NOT_FOUND')
add('zip_bad_version', plain_zip({'a/data.pkl': state_dict(), 'a/version': b'99\n'}), 'SDICT_E_VERSION')
add('zip_bad_byteorder', torch_zip(state_dict(), extra={'archive/byteorder': b'middle'}), 'SDICT_E_FORMAT,SDICT_E_ZIP_CORRUPT')

# regressions from adversarial review: records whose sizes disagree
def cd_entry(data, name):
    """Offset of the central-directory entry for name."""
    i = data.index(b'PK\x01\x02')
    while data[i + 46:i + 46 + len(name)] != name.encode():
        i = data.index(b'PK\x01\x02', i + 4)
    return i
st = torch_zip(state_dict(('w', tensor('0', 40, 0, (40,), (1,), 'ByteStorage'))), {'0': b''})
add('zip_stored_sizes_disagree', patched(st, cd_entry(st, 'archive/data/0') + 24, '<I', 40), 'SDICT_E_ZIP_CORRUPT')
b = io.BytesIO()
with zipfile.ZipFile(b, 'w') as z:
    z.writestr('archive/data.pkl', state_dict(('w', tensor('0', 2**30 - 1, 0, (2**30 - 1,), (1,)))))
    z.writestr(zipfile.ZipInfo('archive/data/0'), b'\0' * 1024, compress_type=zipfile.ZIP_DEFLATED)
    z.writestr('archive/version', b'3\n')
bomb = b.getvalue()
add('zip_deflate_size_lie', patched(bomb, cd_entry(bomb, 'archive/data/0') + 24, '<I', 4 * (2**30 - 1)), 'SDICT_E_ZIP_CORRUPT')

# ---- 7b. ambiguous archives: torch's zip reader (miniz) would see other records (issue 11) ------
# Each case's naive reading is the clean state_dict `zgood`; the structure torch (or another zip
# reader) would take holds `zevil`, a pickle running CMD. tests/zip/differential.py shows with
# real torch which of these are differentials for torch itself.
import tarfile, zlib
zgood = state_dict(('w', tensor('0', 4, 0, (4,), (1,))))
zevil = P2 + G('os', 'system') + T(U(CMD)) + REDUCE + STOP
zstore = struct.pack('<4f', 1, 2, 3, 4)
class ZR:
    def __init__(self, name, data, **kw):
        self.name, self.data, self.kw, self.crc, self.offset = name.encode(), data, kw, zlib.crc32(data), 0
def zlocal(r):
    k = r.kw; nm = k.get('lname', r.name); x = k.get('lextra', b'')
    return (struct.pack('<IHHHHHIIIHH', 0x04034b50, 20, k.get('lflags', k.get('flags', 0)), k.get('lmethod', 0), 0, 0,
                        k.get('lcrc', r.crc), k.get('lcomp', len(r.data)), k.get('lsize', len(r.data)), len(nm),
                        k.get('lxlen', len(x))) + nm + x + r.data + k.get('desc', b''))
def zcentral(r):
    return struct.pack('<IHHHHHHIIIHHHHHII', 0x02014b50, 20, 20, r.kw.get('flags', 0), 0, 0, 0, r.crc,
                       len(r.data), len(r.data), len(r.name), 0, 0, 0, 0, 0, r.offset) + r.name
def zbody(recs, start=0):
    b = b''
    for r in recs:
        r.offset = start + len(b); b += zlocal(r)
    return b
def zend(n, size, off, comment=b''):
    return struct.pack('<IHHHHIIH', 0x06054b50, 0, 0, n, n, size, off, len(comment)) + comment
def zarchive(recs, prefix=b'', gap=b''):
    body = prefix + zbody(recs, len(prefix)) + gap
    cd = b''.join(zcentral(r) for r in recs)
    return body + cd + zend(len(recs), len(cd), len(body))
def zclean(**kw):
    """data.pkl (with kw), data/0, version: what torch writes, in its order."""
    return [ZR('archive/data.pkl', zgood, **kw), ZR('archive/data/0', zstore), ZR('archive/version', b'3\n')]
def zevil_recs(): return [ZR('archive/data.pkl', zevil), ZR('archive/version', b'3\n')]
AMB = 'SDICT_E_ZIP_CORRUPT'
# several end records: the one miniz takes (last signature) hides in the comment of the one
# whose comment length ends the file
a, b = zclean(), zevil_recs()
body = zbody(a); body += zbody(b, len(body))
cda, cdb = b''.join(map(zcentral, a)), b''.join(map(zcentral, b))
add('zip_ambiguous_eocd_in_comment', body + cda + cdb +
    zend(3, len(cda), len(body), zend(2, len(cdb), len(body) + len(cda)) + b'!'), AMB, 'ambiguous')
# ...and one whose own comment length also fits: two complete end records
add('zip_ambiguous_two_eocds', body + cda + cdb +
    zend(3, len(cda), len(body), zend(2, len(cdb), len(body) + len(cda))[:-2] + b'\0\0'), AMB, 'ambiguous')
# ZIP64 end record (miniz's choice) and classic one (other readers') pointing at two directories
z64 = len(body) + len(cda) + len(cdb)
add('zip_ambiguous_zip64_vs_classic', body + cda + cdb +
    struct.pack('<IQHHIIQQQQ', 0x06064b50, 44, 0x031E, 45, 0, 0, 2, 2, len(cdb), len(body) + len(cda)) +
    struct.pack('<IIQI', 0x07064b50, 0, z64, 1) + zend(3, len(cda), len(body)), AMB, 'ambiguous')
# names miniz's case-insensitive sorted lookup confuses, exact duplicates
add('zip_ambiguous_name_case', zarchive(zclean() + [ZR('archive/DATA.PKL', zevil)]), AMB, 'letter case')
add('zip_ambiguous_duplicate', zarchive(zclean() + [ZR('archive/data.pkl', zevil)]), AMB, 'duplicate')
add('zip_ambiguous_folder_case', zarchive([ZR('archive/version', b'3\n'), ZR('ARCHIVE/data.pkl', zevil),
                                           ZR('archive/data/0', zstore)]), AMB, 'ambiguous')
# local headers that disagree with the central directory
add('zip_ambiguous_local_name', zarchive(zclean(lname=b'archive/evil.pkl')), AMB, 'ambiguous')
add('zip_ambiguous_local_method', zarchive(zclean(lmethod=8)), AMB, 'ambiguous')
add('zip_ambiguous_local_crc', zarchive(zclean(lcrc=0x12345678)), AMB, 'ambiguous')
add('zip_ambiguous_local_size', zarchive(zclean(lsize=len(zgood) + 1, lcomp=len(zgood) + 1)), AMB, 'ambiguous')
add('zip_ambiguous_local_flags', zarchive(zclean(lflags=0x0800)), AMB, 'ambiguous')
# a local extra length that moves the payload (both torch and statedict take the local one):
# the record then runs into the next one
add('zip_ambiguous_local_extra_len', zarchive(zclean(lxlen=16)), AMB, 'ambiguous')
# data descriptors (flag bit 3) that disagree or are missing
def desc(crc, comp, size, sig=True):
    return (struct.pack('<I', 0x08074b50) if sig else b'') + struct.pack('<III', crc, comp, size)
n = len(zgood); c = zlib.crc32(zgood)
add('zip_ambiguous_descriptor_crc', zarchive(zclean(flags=8, lcrc=0, lsize=0, lcomp=0, desc=desc(c ^ 1, n, n))), AMB, 'ambiguous')
add('zip_ambiguous_descriptor_size', zarchive(zclean(flags=8, lcrc=0, lsize=0, lcomp=0, desc=desc(c, n + 8, n + 8))), AMB, 'ambiguous')
add('zip_ambiguous_descriptor_missing', zarchive(zclean(flags=8, lcrc=0, lsize=0, lcomp=0)), AMB, 'descriptor')
# bytes no central entry covers: a hidden record before the archive, a gap before the directory
add('zip_ambiguous_hidden_prefix', zarchive(zclean(), prefix=zlocal(ZR('archive/data.pkl', zevil))), AMB, 'ambiguous')
add('zip_ambiguous_gap_before_cd', zarchive(zclean(), gap=zlocal(ZR('archive/data.pkl', zevil))), AMB, 'ambiguous')
# zip vs legacy: torch (_is_zipfile) and statedict both decide on the first four bytes alone; a
# legacy tar whose first member name starts with PK\3\4 is a zip to both (and a broken one)
t = io.BytesIO()
with tarfile.open(fileobj=t, mode='w', format=tarfile.USTAR_FORMAT) as tf:
    ti = tarfile.TarInfo('PK\x03\x04sys_info'); ti.size = 1; tf.addfile(ti, io.BytesIO(b'x'))
add('zip_magic_on_legacy_tar', t.getvalue(), 'SDICT_E_ZIP_CORRUPT,SDICT_E_TRUNCATED')

# ---- 8. legacy stream: every header field corrupted ----------------------------------------------
sd_legacy = P2 + EMPTY_DICT + U('w') + G('torch._utils', '_rebuild_tensor_v2') + MARK + legacy_pid('1', 4) + I(0) + \
    T(I(4)) + T(I(1)) + FALSE + ODICT + b't' + REDUCE + SETITEM + STOP
payload = struct.pack('<q', 4) + struct.pack('<4f', 1, 2, 3, 4)
LG = 'SDICT_E_FORMAT,SDICT_E_VERSION,SDICT_E_PICKLE_TYPE'
add('legacy_bad_magic', legacy(sd_legacy, ['1'], [payload], magic=P2 + I(12345) + STOP), LG)
add('legacy_magic_not_int', legacy(sd_legacy, ['1'], [payload], magic=P2 + U('x') + STOP), LG)
add('legacy_bad_protocol', legacy(sd_legacy, ['1'], [payload], proto=P2 + b'M\xea\x03' + STOP), LG)
add('legacy_sysinfo_not_dict', legacy(sd_legacy, ['1'], [payload], sysinfo=P2 + I(1) + STOP), LG)
add('legacy_truncated_sysinfo', (MAGIC + PROTO + SYSINFO)[:-20], 'SDICT_E_TRUNCATED,SDICT_E_FORMAT')
add('legacy_keys_not_list', MAGIC + PROTO + SYSINFO + sd_legacy + P2 + I(5) + STOP + payload, LG + ',SDICT_E_STORAGE')
add('legacy_unknown_key', legacy(sd_legacy, ['2'], [payload]), 'SDICT_E_STORAGE,SDICT_E_FORMAT')
add('legacy_count_mismatch', legacy(sd_legacy, ['1'], [struct.pack('<q', 5) + struct.pack('<5f', 1, 2, 3, 4, 5)]), 'SDICT_E_STORAGE')
add('legacy_count_huge', legacy(sd_legacy, ['1'], [struct.pack('<q', 1 << 62)]), 'SDICT_E_STORAGE,SDICT_E_TRUNCATED')
add('legacy_count_negative', legacy(sd_legacy, ['1'], [struct.pack('<q', -1)]), 'SDICT_E_STORAGE,SDICT_E_TRUNCATED')
add('legacy_payload_truncated', legacy(sd_legacy, ['1'], [payload[:-3]]), 'SDICT_E_TRUNCATED')
add('legacy_numel_huge', legacy(sd_legacy.replace(I(4) + NONE, I(2**60) + NONE, 1), ['1'], [payload]), 'SDICT_E_STORAGE,SDICT_E_TRUNCATED,SDICT_E_LIMIT')
add('legacy_missing_keylist', MAGIC + PROTO + SYSINFO + sd_legacy, 'SDICT_E_TRUNCATED,SDICT_E_FORMAT')

# ---- 8b. legacy tar (torch < 0.4): members sys_info, pickle, tensors, storages -------------------
import tarfile
def tar(members):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode='w', format=tarfile.USTAR_FORMAT) as t:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return b.getvalue()
def tar_tensors(record):
    return P2 + I(1) + STOP + P2 + record + STOP + struct.pack('<ii', 1, 0) + struct.pack('<qqq', 4, 1, 0)
tar_storages = (P2 + I(1) + STOP + P2 + T(U('1'), U('cpu'), G('torch', 'FloatStorage')) + STOP +
                struct.pack('<q', 4) + b'\0' * 16 + P2 + EMPTY_LIST + STOP)
tar_pickle = P2 + EMPTY_DICT + U('w') + U('t1') + b'Q' + SETITEM + STOP
def tar_case(tensors=tar_tensors(T(U('t1'), U('1'), G('torch', 'FloatTensor'))), pickle=tar_pickle,
             storages=tar_storages):
    return tar([('sys_info', SYSINFO), ('pickle', pickle), ('tensors', tensors), ('storages', storages)])
add('tar_tensor_type_os_system', tar_case(tensors=tar_tensors(T(U('t1'), U('1'), G('os', 'system')))), UNSAFE)
add('tar_tensor_record_reduce', tar_case(tensors=tar_tensors(G('os', 'system') + T(U(CMD)) + REDUCE)), UNSAFE)
add('tar_pickle_os_system', tar_case(pickle=P2 + G('os', 'system') + T(U(CMD)) + REDUCE + STOP), UNSAFE)
add('tar_storage_type_os_system', tar_case(storages=P2 + I(1) + STOP + P2 + T(U('1'), U('cpu'), G('os', 'system')) +
    STOP + struct.pack('<q', 4) + b'\0' * 16 + P2 + EMPTY_LIST + STOP), UNSAFE + ',SDICT_E_DTYPE,SDICT_E_FORMAT')
add('tar_tensor_count_lies', tar_case(tensors=P2 + I(10**9) + STOP), 'SDICT_E_FORMAT,SDICT_E_TRUNCATED')
add('tar_tensor_extent_huge', tar_case(tensors=P2 + I(1) + STOP + P2 + T(U('t1'), U('1'), G('torch', 'FloatTensor')) +
    STOP + struct.pack('<ii', 2, 0) + struct.pack('<qqqqq', 1 << 40, 1 << 40, 1, 1, 0)), 'SDICT_E_STORAGE,SDICT_E_SHAPE')
add('tar_storage_count_lies', tar_case(storages=P2 + I(1) + STOP + P2 + T(U('1'), U('cpu'), G('torch', 'FloatStorage')) +
    STOP + struct.pack('<q', 1 << 40) + b'\0' * 16), 'SDICT_E_STORAGE,SDICT_E_TRUNCATED,SDICT_E_FORMAT')

# ---- 8d. where torch's legacy reading sees another structure (issue 11) -------------------------
# torch tries Python's tarfile first and, when it raises, reads a magic-number stream; tarfile's
# getmember takes the last member of a name and follows links, PAX and GNU names. Each file is
# refused as ambiguous (tests/torch/legacy_diff.py shows torch 1.13 running these payloads).
AMB, FMT = 'ambiguous', 'SDICT_E_FORMAT'
def thdr(name, size, typ=b'0', link=b'', prefix=b'', magic=b'ustar\x0000', size_field=None, chk='good',
         pad=b'', mode=b'0000644\0'):
    h = bytearray(512)
    h[0:len(name)] = name; h[100:108] = mode; h[108:116] = b'0000000\0'; h[116:124] = b'0000000\0'
    h[124:136] = size_field if size_field is not None else b'%011o\0' % size
    h[136:148] = b'00000000000\0'; h[156:157] = typ; h[157:157 + len(link)] = link
    h[257:265] = magic; h[345:345 + len(prefix)] = prefix; h[500:500 + len(pad)] = pad
    h[148:156] = b' ' * 8
    sm = sum(b - 256 if b > 127 else b for b in h) if chk == 'signed' else sum(h) + (chk == 'bad')
    h[148:156] = b'%06o\0 ' % sm
    return bytes(h)
def tmem(name, data, **kw): return thdr(name, len(data), **kw) + data + b'\0' * (-len(data) % 512)
EVIL = P2 + G('os', 'system') + T(U(CMD)) + REDUCE + STOP
def tclean(pickle=tar_pickle, tensors=tar_case.__defaults__[0], storages=tar_storages):
    return [tmem(b'sys_info', SYSINFO), tmem(b'pickle', pickle), tmem(b'tensors', tensors),
            tmem(b'storages', storages)]
TEND = b'\0' * 1024
def tfile(*parts): return b''.join(parts) + TEND
evil_name = P2 + G('os', 'system') + T(SU(CMD[:60])) + REDUCE + STOP
assert len(evil_name) <= 100
add('tar_bad_checksum_ustar', thdr(evil_name, 0, chk='bad') + tfile(*tclean()), FMT, AMB)
add('tar_first_size_not_octal', thdr(evil_name, 0, size_field=b'0 1' + b'\0' * 9) + tfile(*tclean()), FMT, AMB)
add('tar_first_chksum_text', thdr(b'sys_info', 0)[:148] + b'x12345\0 ' + thdr(b'sys_info', 0)[156:] + tfile(*tclean()),
    FMT, AMB)
add('tar_signed_checksum_payload', tfile(thdr(b'sys_info', len(SYSINFO), magic=b'\0' * 8, chk='signed', pad=b'\xff' * 4) +
    SYSINFO + b'\0' * (-len(SYSINFO) % 512), tmem(b'pickle', EVIL), *tclean()[2:]), UNSAFE, 'os.system')
add('tar_duplicate_pickle', tfile(*tclean(), tmem(b'pickle', EVIL)), FMT, AMB)
for typ, tag in [(b'7', 'contiguous'), (b'Z', 'unknown'), (b'S', 'sparse'), (b'5', 'directory'), (b'6', 'fifo'),
                 (b'3', 'chardev')]:
    add('tar_type_%s_pickle' % tag, tfile(*tclean(), tmem(b'pickle', EVIL, typ=typ)), FMT, AMB)
add('tar_v7_directory_slash', tfile(*tclean(), tmem(b'pickle/', b'', typ=b'\0')), FMT, AMB)
pax = b'%d path=pickle\n' % (len(b' path=pickle\n') + 2)
add('tar_pax_path', tfile(*tclean(), tmem(b'PaxHeader/zzz', pax, typ=b'x'), tmem(b'zzz', EVIL)), FMT, AMB)
add('tar_pax_global', tfile(tmem(b'pax_global_header', b'15 size=99999\n', typ=b'g'), *tclean()), FMT, AMB)
add('tar_gnu_longname', tfile(*tclean(), tmem(b'././@LongLink', b'pickle\0', typ=b'L'), tmem(b'zzz', EVIL)), FMT, AMB)
add('tar_hardlink_pickle', tfile(tmem(b'evil', EVIL), *tclean(), thdr(b'pickle', 0, typ=b'1', link=b'evil')), FMT, AMB)
add('tar_symlink_pickle', tfile(tmem(b'evil', EVIL), *tclean(), thdr(b'pickle', 0, typ=b'2', link=b'evil')), FMT, AMB)
hidden = tmem(b'pickle', EVIL)
add('tar_symlink_with_size', tfile(*tclean(), thdr(b'lnk', len(hidden), typ=b'2', link=b'x') + hidden), FMT, AMB)
for field, tag in [(b'+0000000017\0', 'plus'), (b'0o000000017\0', '0o_prefix'), (b'00000_00017\0', 'underscore'),
                   (b'\x80' + b'\0' * 10 + b'\x0f', 'base256'), (b'-0000000001\0', 'negative')]:
    add('tar_size_%s' % tag, tfile(*tclean(), thdr(b'extra', 0, size_field=field) + b'\0' * 512), FMT, AMB)
add('tar_later_mode_invalid', tfile(tmem(b'sys_info', SYSINFO), thdr(b'junk', 0, mode=b'0000999\0'), *tclean()[1:]),
    FMT, AMB)
add('tar_later_bad_checksum', tfile(tmem(b'sys_info', SYSINFO), thdr(b'junk', 0, chk='bad'), *tclean()[1:]), FMT, AMB)
add('tar_first_member_past_eof', thdr(evil_name, 1 << 20) + b'\0' * 512, 'SDICT_E_TRUNCATED', 'magic-number stream')
add('tar_prefix_pickle', tfile(tclean()[0], tmem(b'pickle', tar_pickle, prefix=b'x'), *tclean()[2:]), FMT,
    "no 'pickle' member")
add('tar_dot_slash_pickle', tfile(tclean()[0], tmem(b'./pickle', tar_pickle), *tclean()[2:]), FMT, "no 'pickle' member")
add('tar_count_global', tfile(*tclean(tensors=P2 + G('collections', 'OrderedDict') + b')' + REDUCE + STOP)), UNSAFE,
    'only literals')
add('tar_views_global', tfile(*tclean(storages=tar_storages[:-len(P2 + EMPTY_LIST + STOP)] + P2 +
                                      G('collections', 'OrderedDict') + b')' + REDUCE + STOP)), UNSAFE, 'only literals')
# the magic-number stream: header pickles run with a plain pickle.load in torch
plain_obj = P2 + EMPTY_DICT + U('epoch') + I(3) + SETITEM + STOP
no_keys = P2 + EMPTY_LIST + STOP
odict_pkl = P2 + ODICT + STOP
add('stream_magic_global', legacy(plain_obj, magic=odict_pkl), UNSAFE, 'only literals')
add('stream_protocol_global', legacy(plain_obj, proto=P2 + G('builtins', 'set') + b')' + REDUCE + STOP), UNSAFE,
    'only literals')
add('stream_sysinfo_global', legacy(plain_obj, sysinfo=odict_pkl), UNSAFE, 'only literals')
add('stream_keys_payload', MAGIC + PROTO + SYSINFO + plain_obj + EVIL, UNSAFE, 'only literals')
inner = MAGIC[2:] + PROTO + SYSINFO + plain_obj + no_keys
frame = inner + b'\0' * (10000 - len(inner))
add('stream_stop_inside_frame', b'\x80\x04\x95' + struct.pack('<Q', len(frame)) + frame + EVIL + SYSINFO + plain_obj +
    no_keys, FMT, AMB)
small = b'\x80\x04\x95' + struct.pack('<Q', 20) + EMPTY_DICT + STOP + b'\0' * 18
add('pickle_stop_inside_small_frame', torch_zip(small), FMT, AMB)
# _compat_pickle: protocols 0-2 rename Python 2 names, 3+ do not
add('pickle_builtin_proto3', torch_zip(b'\x80\x03' + G('__builtin__', 'set') + b')' + REDUCE + STOP), UNSAFE,
    "'__builtin__.set'")
add('pickle_copy_reg_proto2', torch_zip(P2 + G('copy_reg', '_reconstructor') + b')' + REDUCE + STOP), UNSAFE,
    "'copyreg._reconstructor' (written 'copy_reg._reconstructor'")
add('pickle_global_crlf', torch_zip(P2 + b'ccollections\r\nOrderedDict\r\n)R' + STOP), UNSAFE, 'collections\\r')

# ---- 8c. the constructors torch 2.x added, given wrong arguments --------------------------------
TY, UN, DT = 'SDICT_E_PICKLE_TYPE', 'SDICT_E_UNSUPPORTED', 'SDICT_E_DTYPE'
F = lambda x: b'G' + struct.pack('>d', x)                                          # BINFLOAT
def call(mod, name, *args): return G(mod, name) + T(*args) + REDUCE
def v2(key, numel, offset, size, stride, cls='FloatStorage', meta=None):
    """_rebuild_tensor_v2 with optional metadata dict (bytes of a pickled dict)."""
    return (G('torch._utils', '_rebuild_tensor_v2') + MARK + pid(key, numel, cls) + I(offset) +
            T(*[I(x) for x in size]) + T(*[I(x) for x in stride]) + FALSE + ODICT +
            (meta or b'') + b't' + REDUCE)
def longs(*xs): return struct.pack('<%dq' % len(xs), *xs)
def one(v, storages=None): return torch_zip(P2 + EMPTY_DICT + U('x') + v + SETITEM + STOP, storages)
def layout(name): return call('torch.serialization', '_get_layout', U(name))
SIZE = lambda *d: G('torch', 'Size') + T(T(*[I(x) for x in d])) + REDUCE
# Counter, device, complex, layouts
add('counter_from_list', one(call('collections', 'Counter', EMPTY_LIST + MARK + I(1) + I(1) + b'e')), UN)
add('counter_two_args', one(call('collections', 'Counter', EMPTY_DICT, EMPTY_DICT)), UN)
add('device_no_args', one(G('torch', 'device') + b')' + REDUCE), TY)
add('device_bad_type', one(call('torch', 'device', U('cu da'))), TY)
add('device_long_type', one(call('torch', 'device', U('x' * 5000))), TY)
add('device_negative_index', one(call('torch', 'device', U('cuda'), I(-1))), TY)
add('device_index_str', one(call('torch', 'device', U('cuda'), U('1'))), TY)
add('device_bad_string_index', one(call('torch', 'device', U('cuda:-1'))), TY)
add('device_empty_string_index', one(call('torch', 'device', U('cuda:'))), TY)
add('complex_from_str', one(call('builtins', 'complex', U('1+2j'))), UN)
add('complex_three_args', one(call('builtins', 'complex', F(1), F(2), F(3))), TY)
add('layout_unknown', one(layout('torch.sparse_xyz')), TY)
add('layout_not_str', one(call('torch.serialization', '_get_layout', I(1))), TY)
add('qscheme_unknown', one(G('torch', 'per_tensor_bogus')), UNSAFE)
# _rebuild_qtensor
def qt(params, cls='QInt8Storage', numel=4, size=(4,), stride=(1,), nargs=7):
    args = [pid('0', numel, cls), I(0), T(*[I(x) for x in size]), T(*[I(x) for x in stride]), params,
            FALSE, ODICT][:nargs]
    return G('torch._utils', '_rebuild_qtensor') + MARK + b''.join(args) + b't' + REDUCE
PT = T(G('torch', 'per_tensor_affine'), F(0.1), I(0))
Q4 = {'0': b'\0' * 4}
add('qtensor_six_args', one(qt(PT, nargs=6), Q4), TY)
add('qtensor_params_not_tuple', one(qt(I(5)), Q4), TY)
add('qtensor_params_no_qscheme', one(qt(T(F(0.1), I(0))), Q4), TY)
add('qtensor_per_tensor_two_items', one(qt(T(G('torch', 'per_tensor_affine'), F(0.1))), Q4), TY)
add('qtensor_symmetric', one(qt(T(G('torch', 'per_tensor_symmetric'), F(0.1), I(0))), Q4), UN)
add('qtensor_float_storage', one(qt(PT, cls='FloatStorage'), {'0': b'\0' * 16}), DT)
add('qtensor_packed_past_storage', one(qt(PT, cls='QUInt4x2Storage', numel=2, size=(7,)), {'0': b'\0' * 2}),
    'SDICT_E_STORAGE')
PC = lambda scales, zps, axis: T(G('torch', 'per_channel_affine'), scales, zps, I(axis))
sc = v2('1', 4, 0, (4,), (1,), 'DoubleStorage')
zp = v2('2', 4, 0, (4,), (1,), 'LongStorage')
QS = {'0': b'\0' * 4, '1': b'\0' * 32, '2': b'\0' * 32}
add('qtensor_axis_out_of_range', one(qt(MARK + G('torch', 'per_channel_affine') + sc + zp + I(3) + b't'), QS), TY)
add('qtensor_axis_negative', one(qt(MARK + G('torch', 'per_channel_affine') + sc + zp + I(-1) + b't'), QS), TY)
add('qtensor_scales_short', one(qt(MARK + G('torch', 'per_channel_affine') + v2('1', 4, 0, (3,), (1,), 'DoubleStorage') +
                                   zp + I(0) + b't'), QS), TY)
add('qtensor_scales_list', one(qt(MARK + G('torch', 'per_channel_affine') + EMPTY_LIST + zp + I(0) + b't'), QS), TY)
add('qtensor_scales_int', one(qt(MARK + G('torch', 'per_channel_affine') + v2('1', 4, 0, (4,), (1,), 'LongStorage') +
                                 zp + I(0) + b't'), QS), DT)
add('qtensor_zero_points_bool', one(qt(MARK + G('torch', 'per_channel_affine') + sc +
                                       v2('2', 4, 0, (4,), (1,), 'BoolStorage') + I(0) + b't'),
                                    {'0': b'\0' * 4, '1': b'\0' * 32, '2': b'\0' * 4}), DT)
# _rebuild_sparse_tensor / _rebuild_sparse_csr_tensor
def sparse(lay, *data, fn='_rebuild_sparse_tensor'):
    return G('torch._utils', fn) + T(lay, T(*data)) + REDUCE
ix = lambda key, *shape, cls='LongStorage': v2(key, max(1, math.prod(shape)), 0, shape,
                                               tuple(math.prod(shape[i + 1:]) for i in range(len(shape))), cls)
vals = lambda key, n: v2(key, n, 0, (n,), (1,))
COO_S = lambda idx: {'0': longs(*idx), '1': b'\0' * 8}
coo = lambda idx, size=(2, 2), extra=b'': sparse(layout('torch.sparse_coo'), ix('0', 2, 2), vals('1', 2), SIZE(*size), *([extra] if extra else []))
add('sparse_layout_not_layout', one(sparse(I(3), ix('0', 2, 2), vals('1', 2), SIZE(2, 2)), COO_S([0, 1, 0, 1])), TY)
add('sparse_strided_layout', one(sparse(layout('torch.strided'), ix('0', 2, 2), vals('1', 2), SIZE(2, 2)),
                                 COO_S([0, 1, 0, 1])), UN)
add('sparse_data_not_tuple', one(G('torch._utils', '_rebuild_sparse_tensor') + T(layout('torch.sparse_coo'), I(1)) +
                                 REDUCE), TY)
add('sparse_coo_two_items', one(sparse(layout('torch.sparse_coo'), ix('0', 2, 2), vals('1', 2)), COO_S([0, 1, 0, 1])), TY)
add('sparse_coo_index_out_of_range', one(coo(None), COO_S([0, 1, 5, 1])), 'SDICT_E_STORAGE')
add('sparse_coo_index_negative', one(coo(None), COO_S([0, -1, 0, 1])), 'SDICT_E_STORAGE')
add('sparse_coo_index_float', one(sparse(layout('torch.sparse_coo'), v2('0', 4, 0, (2, 2), (2, 1)), vals('1', 2),
                                         SIZE(2, 2)), {'0': b'\0' * 16, '1': b'\0' * 8}), DT)
add('sparse_coo_index_1d', one(sparse(layout('torch.sparse_coo'), ix('0', 4), vals('1', 2), SIZE(2, 2)),
                               COO_S([0, 1, 0, 1])), 'SDICT_E_SHAPE')
add('sparse_coo_values_rows', one(sparse(layout('torch.sparse_coo'), ix('0', 2, 2), vals('1', 3), SIZE(2, 2)),
                                  {'0': longs(0, 1, 0, 1), '1': b'\0' * 12}), 'SDICT_E_SHAPE')
add('sparse_coo_size_rank', one(coo(None, size=(2, 2, 2)), COO_S([0, 1, 0, 1])), 'SDICT_E_SHAPE')
add('sparse_coo_size_negative', one(coo(None, size=(2, -2)), COO_S([0, 1, 0, 1])), 'SDICT_E_SHAPE')
add('sparse_coo_expanded_indices', one(sparse(layout('torch.sparse_coo'), v2('0', 2, 0, (2, 1 << 40), (1, 0), 'LongStorage'),
                                              v2('1', 1, 0, (1 << 40,), (0,)), SIZE(2, 2)),
                                       {'0': longs(0, 1), '1': b'\0' * 4}), 'SDICT_E_SHAPE')
add('sparse_coo_coalesced_not_bool', one(coo(None, extra=U('yes')), COO_S([0, 1, 0, 1])), TY)
add('sparse_components_not_tensors', one(sparse(layout('torch.sparse_coo'), I(1), I(2), SIZE(2, 2))), TY)
CSR_S = lambda crow, col: {'0': longs(*crow), '1': longs(*col), '2': b'\0' * 4 * len(col)}
def csr(crow, col, fn='_rebuild_sparse_tensor', lay='torch.sparse_csr'):
    """A 2x3 CSR tensor (valid for crow [0, 1, 2], col [0, 2]) with its storages."""
    return one(sparse(layout(lay), ix('0', len(crow)), ix('1', len(col)), vals('2', len(col)), SIZE(2, 3), fn=fn),
               CSR_S(crow, col))
add('sparse_csr_crow_not_zero', csr([1, 1, 2], [0, 2]), 'SDICT_E_STORAGE')
add('sparse_csr_crow_past_nnz', csr([0, 1, 9], [0, 2]), 'SDICT_E_STORAGE')
add('sparse_csr_crow_decreasing', csr([0, 3, 2], [0, 2]), 'SDICT_E_STORAGE')
add('sparse_csr_col_out_of_range', csr([0, 1, 2], [0, 7]), 'SDICT_E_STORAGE')
add('sparse_csr_crow_length', csr([0, 1, 1, 2], [0, 2]), 'SDICT_E_SHAPE')
add('sparse_csr_index_dtypes_differ', one(sparse(layout('torch.sparse_csr'), ix('0', 3), ix('1', 2, cls='IntStorage'),
                                                 vals('2', 2), SIZE(2, 3)),
                                          {'0': longs(0, 1, 2), '1': b'\0' * 8, '2': b'\0' * 8}), DT)
add('sparse_legacy_csr_on_coo', csr([0, 1, 2], [0, 2], fn='_rebuild_sparse_csr_tensor', lay='torch.sparse_coo'), UN)
# the valid CSR tensor above loads (a check that the cases fail for the reason they name)
assert csr([0, 1, 2], [0, 2])
add('sparse_bsr_blocks_do_not_tile', one(sparse(layout('torch.sparse_bsr'), ix('0', 2), ix('1', 1),
                                                v2('2', 4, 0, (1, 2, 2), (4, 2, 1)), SIZE(3, 2)),
                                         {'0': longs(0, 1), '1': longs(0), '2': b'\0' * 16}), 'SDICT_E_SHAPE')
# the legacy format checks index values after its payloads are read (they follow the pickle)
lcoo = (P2 + EMPTY_DICT + U('x') + G('torch._utils', '_rebuild_sparse_tensor') + T(layout('torch.sparse_coo'), T(
    G('torch._utils', '_rebuild_tensor_v2') + MARK + T(U('storage'), G('torch', 'LongStorage'), U('1'), U('cpu'), I(4), NONE) +
    b'Q' + I(0) + T(I(2), I(2)) + T(I(2), I(1)) + FALSE + ODICT + b't' + REDUCE,
    G('torch._utils', '_rebuild_tensor_v2') + MARK + legacy_pid('2', 2) + I(0) + T(I(2)) + T(I(1)) + FALSE + ODICT +
    b't' + REDUCE, SIZE(2, 2))) + REDUCE + SETITEM + STOP)
add('legacy_sparse_index_out_of_range', legacy(lcoo, ['1', '2'], [struct.pack('<q', 4) + longs(0, 1, 9, 1),
                                                                  struct.pack('<q', 2) + b'\0' * 8]), 'SDICT_E_STORAGE')
# _rebuild_nested_tensor
def nested(buf_n, sizes, strides, offsets, cls='LongStorage'):
    n = len(offsets)
    return one(G('torch._utils', '_rebuild_nested_tensor') + T(vals('0', buf_n), v2('1', 2 * n, 0, (n, 2), (2, 1), cls),
               v2('2', 2 * n, 0, (n, 2), (2, 1), cls), v2('3', n, 0, (n,), (1,), cls)) + REDUCE,
               {'0': b'\0' * 4 * buf_n, '1': longs(*sizes), '2': longs(*strides), '3': longs(*offsets)})
add('nested_offset_past_buffer', nested(6, [2, 3, 1, 1], [3, 1, 1, 1], [0, 6]), 'SDICT_E_STORAGE')
add('nested_extent_past_buffer', nested(6, [2, 3, 2, 3], [3, 1, 3, 1], [0, 1]), 'SDICT_E_STORAGE')
add('nested_negative_stride', nested(6, [2, 3, 1, 1], [-3, 1, 1, 1], [3, 0]), 'SDICT_E_STORAGE')
add('nested_size_overflow', nested(6, [2**62, 2**62, 1, 1], [1, 1, 1, 1], [0, 0]), 'SDICT_E_STORAGE')
add('nested_float_sizes', one(G('torch._utils', '_rebuild_nested_tensor') + T(vals('0', 4), v2('1', 2, 0, (1, 2), (2, 1)),
                                                                              v2('1', 2, 0, (1, 2), (2, 1)), vals('1', 1)) +
                              REDUCE, {'0': b'\0' * 16, '1': b'\0' * 8}), DT)
add('nested_three_args', one(G('torch._utils', '_rebuild_nested_tensor') + T(vals('0', 4), I(1), I(2)) + REDUCE,
                             {'0': b'\0' * 16}), TY)
# _rebuild_wrapper_subclass: torch itself cannot rebuild any allowed class
add('wrapper_subclass_tensor', one(G('torch._utils', '_rebuild_wrapper_subclass') + MARK + G('torch', 'Tensor') +
    G('torch', 'float32') + T(I(2)) + T(I(1)) + I(0) + layout('torch.strided') + call('torch', 'device', U('cpu')) +
    FALSE + b't' + REDUCE), UN)
add('wrapper_subclass_two_args', one(call('torch._utils', '_rebuild_wrapper_subclass', G('torch', 'Tensor'), I(1))), TY)
# _rebuild_device_tensor_from_cpu_tensor / _from_numpy
F4 = {'0': b'\0' * 16}
def devt(data, dtype=G('torch', 'float64'), dev=U('xla:0'), fn='_rebuild_device_tensor_from_cpu_tensor'):
    return one(G('torch._utils', fn) + T(data, dtype, dev, FALSE) + REDUCE, F4)
add('device_tensor_data_int', devt(I(1)), TY)
add('device_tensor_dtype_str', devt(vals('0', 4), dtype=U('float64')), TY)
add('device_tensor_device_int', devt(vals('0', 4), dev=I(0)), TY)
add('device_tensor_to_bits', devt(vals('0', 4), dtype=G('torch', 'bits8')), DT)
add('device_tensor_numpy_not_array', devt(U('x'), fn='_rebuild_device_tensor_from_numpy'), TY)
# _rebuild_from_type_v2 and _rebuild_parameter_with_state
V2ARGS = MARK + pid('0', 4) + I(0) + T(I(4)) + T(I(1)) + FALSE + ODICT + b't'
def fromtype(fn, cls, args, state):
    return one(G('torch._tensor', '_rebuild_from_type_v2') + MARK + fn + cls + args + state + b't' + REDUCE, F4)
RT2 = G('torch._utils', '_rebuild_tensor_v2')
add('from_type_func_not_callable', fromtype(I(1), G('torch', 'Tensor'), V2ARGS, NONE), TY)
add('from_type_func_os_system', fromtype(G('os', 'system'), G('torch', 'Tensor'), T(U(CMD)), NONE), UNSAFE)
add('from_type_nested', fromtype(G('torch._tensor', '_rebuild_from_type_v2'), G('torch', 'Tensor'),
                                 T(RT2, G('torch', 'Tensor'), V2ARGS, NONE), NONE), TY)
add('from_type_class_storage', fromtype(RT2, G('torch', 'FloatStorage'), V2ARGS, NONE), UN)
# a state naming an attribute of torch.Tensor itself: torch 2.x assigns it (replacing the data,
# the dtype, requires_grad), torch 1.13 ignores it: ambiguous
add('from_type_state_sets_data', fromtype(RT2, G('torch', 'Tensor'), V2ARGS,
                                          EMPTY_DICT + U('data') + I(1) + SETITEM), TY, 'ambiguous')
add('from_type_slots_set_requires_grad', fromtype(RT2, G('torch', 'Tensor'), V2ARGS,
                                                  T(NONE, EMPTY_DICT + U('requires_grad') + TRUE + SETITEM)), TY, 'ambiguous')
add('from_type_class_unknown', fromtype(RT2, G('torch', 'TensorSubclass'), V2ARGS, NONE), UNSAFE)
add('from_type_state_list', fromtype(RT2, G('torch', 'Tensor'), V2ARGS, EMPTY_LIST), TY)
add('from_type_attr_name_int', fromtype(RT2, G('torch', 'Tensor'), V2ARGS, EMPTY_DICT + I(1) + I(2) + SETITEM), TY)
add('from_type_not_a_tensor', fromtype(G('collections', 'OrderedDict'), G('torch', 'Tensor'), b')', NONE), TY)
add('from_type_wrong_arg_count', one(call('torch._tensor', '_rebuild_from_type_v2', RT2, G('torch', 'Tensor'))), TY)
PS = G('torch._utils', '_rebuild_parameter_with_state')
add('param_state_three_args', one(PS + T(v2('0', 4, 0, (4,), (1,)), TRUE, ODICT) + REDUCE, F4), TY)
add('param_state_not_dict', one(PS + MARK + v2('0', 4, 0, (4,), (1,)) + TRUE + ODICT + I(5) + b't' + REDUCE, F4), TY)
add('param_state_data_int', one(PS + MARK + I(1) + TRUE + ODICT + EMPTY_DICT + b't' + REDUCE), TY)
# a tensor attribute list that is made to hold its own tensor: a cycle through the attributes
cyc = (P2 + EMPTY_LIST + b'q\x00' + b'0' + G('torch._tensor', '_rebuild_from_type_v2') + MARK + RT2 + G('torch', 'Tensor') +
       V2ARGS + EMPTY_DICT + U('a') + b'h\x00' + SETITEM + b't' + REDUCE + b'q\x01' + b'h\x00' + b'h\x01' + b'a' + b'0' + STOP)
add('tensor_attrs_cycle', torch_zip(cyc, F4), UN + ',SDICT_E_LIMIT')
# v2/v3 metadata
add('metadata_conj_on_float', one(v2('0', 4, 0, (4,), (1,), meta=EMPTY_DICT + U('conj') + TRUE + SETITEM), F4), TY)
add('metadata_not_dict', one(v2('0', 4, 0, (4,), (1,), meta=EMPTY_LIST), F4), TY)
add('metadata_conj_str', one(v2('0', 4, 0, (4,), (1,), 'ComplexFloatStorage', meta=EMPTY_DICT + U('conj') + U('yes') +
                                 SETITEM), {'0': b'\0' * 32}), TY)

# ---- 8b. storage classes, location tags, frozensets, numpy protocol 5 ---------------------------
def pid_loc(key, numel, loc, cls=G('torch', 'FloatStorage')):
    return T(U('storage'), cls, U(key), loc, I(numel)) + b'Q'
def rt2_loc(loc, cls=G('torch', 'FloatStorage')):
    return (G('torch._utils', '_rebuild_tensor_v2') + MARK + pid_loc('0', 4, loc, cls) + I(0) +
            T(I(4)) + T(I(1)) + FALSE + ODICT + b't' + REDUCE)
F16 = {'0': b'\0' * 16}
# torch.load decodes a bytes location as ASCII and fails on anything else (map_location='cpu'
# or not); statedict refuses it naming the tag and the storage key
add('location_bytes_not_ascii', one(rt2_loc(b'C\x02\xff\xfe'), F16), 'SDICT_E_STORAGE')
add('location_nul', one(rt2_loc(U('cuda\x00:0')), F16), 'SDICT_E_STORAGE')
add('location_too_long', one(rt2_loc(U('cuda:' + '9' * 300)), F16), 'SDICT_E_LIMIT')
add('location_int', one(rt2_loc(I(0)), F16), TYPE)
add('location_none', one(rt2_loc(NONE), F16), TYPE)
add('location_bare_storage_bytes', one(pid_loc('0', 4, b'C\x01\x80'), F16), 'SDICT_E_STORAGE')
# legacy stream: the location of a root storage and of a view
add('legacy_location_not_ascii', legacy(P2 + EMPTY_DICT + U('w') + T(U('storage'), G('torch', 'FloatStorage'), U('1'),
    b'C\x01\xff', I(4), NONE) + b'Q' + SETITEM + STOP, ['1'], [struct.pack('<q', 4) + b'\0' * 16]), 'SDICT_E_STORAGE')
# storage classes statedict cannot read: an unsupported dtype, not an unsafe file
add('storage_class_unknown', one(rt2_loc(U('cpu'), G('torch', 'FooStorage')), F16), 'SDICT_E_DTYPE')
add('storage_class_typed', one(rt2_loc(U('cpu'), G('torch', 'TypedStorage')), F16), 'SDICT_E_DTYPE')
add('storage_class_cuda_unknown', one(rt2_loc(U('cpu'), G('torch.cuda', 'FooStorage')), F16), 'SDICT_E_DTYPE')
add('storage_class_unknown_bare', one(pid_loc('0', 4, U('cpu'), G('torch', 'Float8Storage')), F16), 'SDICT_E_DTYPE')
add('storage_class_unknown_called', one(G('torch', 'FooStorage') + T(I(4)) + REDUCE), 'SDICT_E_DTYPE')
add('storage_class_unknown_build', one(G('torch', 'FooStorage') + EMPTY_DICT + BUILD), 'SDICT_E_DTYPE')
add('storage_class_unknown_as_value', one(G('torch', 'FooStorage')), TYPE + ',SDICT_E_DTYPE')
# ...but only names of the torch module ending in Storage: anything else stays unsafe
add('storage_class_other_module', one(rt2_loc(U('cpu'), G('os', 'FooStorage')), F16), UNSAFE)
add('storage_class_torch_not_storage', one(rt2_loc(U('cpu'), G('torch', 'load')), F16), UNSAFE)
add('storage_class_dotted', one(rt2_loc(U('cpu'), G('torch', 'os.FooStorage')), F16), UNSAFE)
add('storage_class_dunder', one(rt2_loc(U('cpu'), G('torch', '__Storage')), F16), UNSAFE)
# frozensets are keys, but immutable; plain sets are not keys
FS = G('builtins', 'frozenset') + T(EMPTY_LIST + MARK + I(1) + I(2) + b'e') + REDUCE
add('frozenset_additems', torch_zip(P2 + FS + MARK + I(3) + b'\x90' + STOP), TYPE)
add('set_as_key', torch_zip(P2 + EMPTY_DICT + G('builtins', 'set') + T(EMPTY_LIST) + REDUCE + I(1) + SETITEM + STOP), TYPE)
add('frozenset_key_holding_list', torch_zip(P2 + EMPTY_DICT + G('builtins', 'frozenset') +
    T(EMPTY_LIST + MARK + EMPTY_LIST + b'e') + REDUCE + I(1) + SETITEM + STOP), TYPE)
# numpy under protocol 5: _frombuffer(buffer, dtype, shape, order)
NPD = G('numpy', 'dtype') + T(U('i8'), FALSE, TRUE) + REDUCE + T(I(3), U('<'), NONE, NONE, NONE, I(-1), I(-1), I(0)) + BUILD
def frombuf(buf, dtype=NPD, shape=T(I(2)), order=U('C'), mod='numpy.core.numeric'):
    return torch_zip(b'\x80\x05' + EMPTY_DICT + U('a') + G(mod, '_frombuffer') + T(buf, dtype, shape, order) + REDUCE + SETITEM + STOP)
BA16 = b'\x96' + struct.pack('<Q', 16) + b'\0' * 16                               # BYTEARRAY8
add('frombuffer_size_mismatch', frombuf(BA16, shape=T(I(3))), TYPE)
add('frombuffer_bad_order', frombuf(BA16, order=U('K')), TYPE)
add('frombuffer_out_of_band', frombuf(b'\x97'), 'SDICT_E_PICKLE_OPCODE,SDICT_E_UNSUPPORTED,' + TYPE)
add('frombuffer_not_bytes', frombuf(EMPTY_LIST), TYPE)
add('frombuffer_no_dtype', frombuf(BA16, dtype=U('i8')), 'SDICT_E_UNSUPPORTED,' + TYPE)
add('frombuffer_three_args', torch_zip(b'\x80\x05' + G('numpy.core.numeric', '_frombuffer') + T(BA16, NPD, T(I(2))) + REDUCE + STOP), TYPE)
add('frombuffer_negative_shape', frombuf(BA16, shape=T(I(-2))), 'SDICT_E_SHAPE,' + TYPE)
add('frombuffer_wrong_module', frombuf(BA16, mod='numpy.core.fromnumeric'), UNSAFE)
add('bytearray8_past_end', b'\x80\x05' + b'\x96' + struct.pack('<Q', 1 << 40) + STOP, 'SDICT_E_TRUNCATED,SDICT_E_LIMIT')

# ---- 9. not a checkpoint at all -------------------------------------------------------------------
add('empty_file', b'', 'SDICT_E_FORMAT,SDICT_E_TRUNCATED')
add('three_bytes', b'abc', 'SDICT_E_FORMAT,SDICT_E_TRUNCATED')
add('html_error_page', b'<html><body>404</body></html>', 'SDICT_E_FORMAT', 'an HTML page')
add('git_lfs_pointer', b'version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n', 'SDICT_E_FORMAT',
    'git lfs pull')
# ---- 9b. other file types, named (issue 11) -----------------------------------------------------
FMT = 'SDICT_E_FORMAT'
add('html_doctype_bom', b'\xef\xbb\xbf\n  <!DOCTYPE HTML>\n<title>Sign in</title>', FMT, 'an HTML page')
add('gguf_file', b'GGUF\x03\0\0\0' + b'\0' * 16, FMT, 'GGUF')
npy = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }" + b' ' * 50 + b'\n'
add('numpy_npy', npy + b'\0' * 4, FMT, 'NumPy .npy')
add('numpy_npz', plain_zip({'x.npy': npy}), FMT, 'NumPy .npz')
add('hdf5_keras_h5', b'\x89HDF\r\n\x1a\n' + b'\0' * 64, FMT, 'HDF5')
add('keras_archive', plain_zip({'metadata.json': b'{}', 'config.json': b'{}'}), FMT, 'Keras')
add('gzip_file', b'\x1f\x8b\x08\x00' + b'\0' * 16, FMT, 'gzip')
add('zip_not_torch', plain_zip({'readme.txt': b'hi'}), FMT, 'not one torch.save wrote')
add('zip_folder_not_torch', plain_zip({'docs/readme.txt': b'hi'}), FMT, 'not one torch.save wrote')

# ---- 10. budget cases (issue 11): small files whose naive cost is huge --------------------------
# Each is written to OUTDIR/budget_<case>.pt and listed in budget.tsv with what `statedict ls`
# must do: "ok" (loads, cheaply), "refused" (exit 3: a clear limit error) or "any". budget.py
# runs every command on each and holds them to 64 x file size + 64 MB and 1 s/MB + 2 s.
# Refused ones are also in manifest.tsv, with the statuses the library must give.
budget_cases = []
def budget(name, data, expect, statuses=None, key='-'):
    assert expect in ('ok', 'refused', 'any')
    with open(os.path.join(out, 'budget_' + name + '.pt'), 'wb') as f:
        f.write(data)
    budget_cases.append((name, expect, key))
    if statuses:
        cases.append(('budget_' + name, statuses))

def lbinput(i): return b'r' + struct.pack('<I', i)                                  # LONG_BINPUT
def lbinget(i): return b'j' + struct.pack('<I', i)                                  # LONG_BINGET
# memo indices that would grow a dense memo table geometrically: each one just past twice the
# last, up to 2**32 - 1 (a table of 32 GB)
idx, memo_geo = 1024, b''
while idx < 2**32:
    memo_geo += lbinput(idx)
    idx = 2 * idx + 1025
budget('memo_geometric', torch_zip(P2 + NONE + memo_geo + b'0' + state_dict()[2:]), 'ok')
# 200,000 memo slots scattered over the 32-bit range
rnd = 12345
sparse_puts = b''
for i in range(200000):
    rnd = (rnd * 6364136223846793005 + 1442695040888963407) % 2**64
    sparse_puts += lbinput(rnd >> 32)
budget('memo_sparse', torch_zip(P2 + NONE + sparse_puts + b'0' + state_dict()[2:]), 'ok')
# a DAG of dicts: d(i+1) = {'a': d(i), 'b': d(i)}, 24 levels over one tensor: 2**24 paths
# (a.b.a.a...), 16M tensors for ls, dump, show, diff and convert if walked as a tree
dag = P2 + tensor('0', 1, 0, (1,), (1,)) + b'q\x00'
for i in range(24):
    dag += EMPTY_DICT + MARK + SU('a') + b'h' + bytes([i]) + SU('b') + b'h' + bytes([i]) + b'u' + b'q' + bytes([i + 1])
budget('dag_dicts', torch_zip(dag + STOP, {'0': b'\0' * 4}), 'refused', 'SDICT_E_LIMIT', key='a.' * 23 + 'a')
# the same shape, 10 levels: 1,024 paths, which load and walk cheaply
dag = P2 + tensor('0', 1, 0, (1,), (1,)) + b'q\x00'
for i in range(10):
    dag += EMPTY_DICT + MARK + SU('a') + b'h' + bytes([i]) + SU('b') + b'h' + bytes([i]) + b'u' + b'q' + bytes([i + 1])
budget('dag_dicts_small', torch_zip(dag + STOP, {'0': b'\0' * 4}), 'ok', key='a.b.a.b.a.b.a.b.a.b')
# a list DAG of 2**25 leaves (under the absolute max_values, far over any per-byte budget)
dag = P2 + I(7) + b'q\x00'
for i in range(25):
    dag += EMPTY_LIST + MARK + b'h' + bytes([i]) + b'h' + bytes([i]) + b'e' + b'q' + bytes([i + 1])
budget('dag_lists', torch_zip(dag + STOP), 'refused', 'SDICT_E_LIMIT', key='3')
# one 1,700-byte integer (4,090 decimal digits, under Python's 4,300) reached 20,000 times:
# 80 MB of decimal text from a 42 KB file (each reach counts its bytes against the walk budget)
big = (1 << (1700 * 8 - 2)) + 12345
raw = big.to_bytes(1700, 'little', signed=True)
def shared_long(n):
    return torch_zip(P2 + EMPTY_DICT + U('k') + EMPTY_LIST + MARK + b'\x8b' + struct.pack('<i', len(raw)) + raw +
                     b'q\x00' + b'h\x00' * (n - 1) + b'e' + SETITEM + STOP)
budget('shared_long', shared_long(20000), 'refused', 'SDICT_E_LIMIT', key='k')
# the same reached 500 times, within the budget: its decimal text is computed once, not 500
# times (each conversion is quadratic in the digits)
budget('shared_long_ok', shared_long(500), 'ok', key='k')
# a 1 MB string reached 1,000 times: a gigabyte of text if printed each time
budget('shared_str', torch_zip(P2 + EMPTY_DICT + U('k') + EMPTY_LIST + MARK + U('s' * 10**6) + b'q\x00' +
                               b'h\x00' * 999 + b'e' + SETITEM + STOP), 'refused', 'SDICT_E_LIMIT', key='k')
# one 1 MB tensor listed 4,000 times: one object through the memo, and 4,000 separate tensors
# over one storage (dump hashes them; the hash is computed once per storage view)
n = 1 << 18
t1 = tensor('0', n, 0, (n,), (1,)) + b'q\x00'
budget('shared_tensor_memo', torch_zip(P2 + EMPTY_DICT + U('k') + EMPTY_LIST + MARK + t1 + b'h\x00' * 3999 + b'e' +
                                       SETITEM + STOP, {'0': b'\x01' * (4 * n)}), 'ok', key='k.3')
st = pid('0', n) + b'q\x00'
first = (G('torch._utils', '_rebuild_tensor_v2') + MARK + st + I(0) + T(I(n)) + T(I(1)) + FALSE + ODICT + b't' +
         REDUCE)
again = (G('torch._utils', '_rebuild_tensor_v2') + MARK + b'h\x00' + I(0) + T(I(n)) + T(I(1)) + FALSE + ODICT + b't' +
         REDUCE)
budget('shared_tensor_views', torch_zip(P2 + EMPTY_DICT + U('k') + EMPTY_LIST + MARK + first + again * 3999 + b'e' +
                                        SETITEM + STOP, {'0': b'\x02' * (4 * n)}), 'ok', key='k.3')
# dict keys whose hashes collide under an unseeded hash: 60,000 ints whose 64-bit hash (the
# library's former unseeded mix of the value) agree in their low 24 bits
M64 = 2**64 - 1
def unxorshift(y, s):
    x = y
    for _ in range(64 // s + 1):
        x = y ^ (x >> s)
    return x & M64
def unmix64(h):
    h = unxorshift(h, 31); h = (h * pow(0x94d049bb133111eb, -1, 2**64)) & M64
    h = unxorshift(h, 27); h = (h * pow(0xbf58476d1ce4e5b9, -1, 2**64)) & M64
    return unxorshift(h, 30)
coll = b''
for i in range(60000):
    k = unmix64(((i + 1) << 24) & M64) ^ 2                     # 2: SDICT_KIND_INT
    coll += I(k - 2**64 if k >= 2**63 else k) + NONE
budget('colliding_keys', torch_zip(P2 + EMPTY_DICT + MARK + coll + b'u' + STOP), 'ok')
# a zip bomb: 40 deflated records of 16 MB of zeros each (about 16 KB compressed apiece), each
# a storage of one tensor; 640 MB if all were inflated
def deflated_zeros(n, nbytes):
    bomb = io.BytesIO()
    zeros = b'\0' * nbytes
    with zipfile.ZipFile(bomb, 'w', zipfile.ZIP_STORED) as z:
        ents = b''.join(U('w%d' % i) + tensor(str(i), nbytes // 4, 0, (nbytes // 4,), (1,)) + SETITEM
                        for i in range(n))
        z.writestr('archive/data.pkl', P2 + EMPTY_DICT + ents + STOP)
        for i in range(n):
            z.writestr(zipfile.ZipInfo('archive/data/%d' % i), zeros, zipfile.ZIP_DEFLATED, 6)
        z.writestr('archive/version', b'3\n')
    return bomb.getvalue()
budget('zip_bomb', deflated_zeros(40, 16 << 20), 'refused', 'SDICT_E_LIMIT', key='w39')
# two such records, 8 MB in all from 8 KB: within the inflate budget (32 x the file + 32 MiB)
budget('zip_deflated_ok', deflated_zeros(2, 4 << 20), 'ok', key='w1')
# a tensor of 10**12 elements expanded (stride 0) over one 4-byte storage, and one of 10**12
# elements overlapping (strides 1, 1) over 8 MB
budget('stride0_huge', torch_zip(state_dict(('w', tensor('0', 1, 0, (10**12,), (0,)))),
                                 {'0': struct.pack('<f', 1.5)}), 'ok', key='w')
budget('overlap_huge', torch_zip(state_dict(('w', tensor('0', 2 * 10**6, 0, (10**6, 10**6), (1, 1)))),
                                 {'0': b'\0' * (8 * 10**6)}), 'ok', key='w')
# 10,946 leaves that give one of two dotted paths: d(i) = {'a': d(i-1), 'a.a': d(i-2)} over
# the int 7, 20 levels (Fibonacci many ways to spell a.a.a...); diff matches leaves by path
dfib = P2 + I(7) + b'q\x00' + b'0' + I(7) + b'q\x01' + b'0'
for i in range(2, 21):
    dfib += (EMPTY_DICT + MARK + SU('a') + b'h' + bytes([i - 1]) + SU('a.a') + b'h' + bytes([i - 2]) + b'u' +
             b'q' + bytes([i]) + b'0')
budget('same_paths', torch_zip(dfib + b'h' + bytes([20]) + STOP), 'ok')
# 100,000 keys, for `show` with a missing key
keys = b''.join(U('layer%d.weight' % i) + I(i) + SETITEM for i in range(100000))
budget('many_keys', torch_zip(P2 + EMPTY_DICT + keys + STOP), 'ok', key='layer5.weight')
# value-dense files: every byte a value (300,000 empty dicts; 300,000 small ints), which a
# command that held a document tree per value (dump) would turn into hundreds of megabytes
# an expanded view of 40 dimensions of 2 over one float: torch's print shows every element of
# short dimensions (2**40 of them); `show` refuses past its storage's elements plus a million
budget('stride0_short_dims', torch_zip(state_dict(('w', tensor('0', 1, 0, (2,) * 40, (0,) * 40))), {'0': b'\0' * 4}), 'any', key='w')
budget('dense_dicts', torch_zip(P2 + EMPTY_LIST + MARK + EMPTY_DICT * 300000 + b'e' + STOP), 'ok', key='7')
budget('dense_dicts_memoized', torch_zip(b'\x80\x04' + EMPTY_LIST + MARK + (EMPTY_DICT + b'\x94') * 200000 + b'e' + STOP), 'ok', key='7')
budget('dense_ints', torch_zip(P2 + EMPTY_LIST + MARK + b'K\x07' * 300000 + b'e' + STOP), 'ok', key='7')
with open(os.path.join(out, 'budget.tsv'), 'w') as f:
    for name, expect, key in budget_cases:
        f.write('%s\t%s\t%s\n' % (name, expect, key))

# ---- safetensors (issue 12): one case per rule of the Rust core, from tests/safetensors ------------
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'safetensors'))
import hostile_st
for st_name, st_data, st_statuses, st_want in hostile_st.cases():
    add(st_name, st_data, st_statuses, st_want)
# a 4 MB header of 60,000 zero-size tensors, and one tensor of a million dimensions
tiny = b','.join(b'"t%06d":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}' % i for i in range(60000))
budget('st_many_tiny_tensors', struct.pack('<Q', len(tiny) + 2) + b'{' + tiny + b'}', 'ok', key='t000007')
dims = b'{"w":{"dtype":"F32","shape":[' + b','.join([b'1'] * 1000000) + b'],"data_offsets":[0,4]}}'
budget('st_million_dims', struct.pack('<Q', len(dims)) + dims + b'\0' * 4, 'ok', key='w')

with open(os.path.join(out, 'manifest.tsv'), 'w') as f:
    for name, st in cases:
        assert 'SDICT_OK' not in st
        f.write('%s\t%s\n' % (name, st))
print('%d hostile cases written to %s' % (len(cases), out))
