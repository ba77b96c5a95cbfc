#!/usr/bin/env python3
"""Generates the hostile corpus: files that try to run code, lie about sizes, or exhaust memory.

Usage: gen_hostile.py OUTDIR MARKER
Writes OUTDIR/<case>.pt and OUTDIR/manifest.tsv with lines "case<TAB>statuses" where statuses is
a comma-separated set of acceptable sdict_status names (never SDICT_OK). Code-execution payloads
run `touch MARKER`: a loader that executed anything would leave the marker behind.

Needs only the Python standard library: the pickles are assembled opcode by opcode (no pickle
module, nothing here is ever unpickled), the archives with zipfile and struct.
"""
import io, os, struct, sys, zipfile

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

def add(name, data, statuses):
    with open(os.path.join(out, name + '.pt'), 'wb') as f:
        f.write(data)
    cases.append((name, statuses))

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
add('rank_too_high', torch_zip(state_dict(('w', tensor('0', 1, 0, (1,) * 40, (1,) * 40))), {'0': b'\0' * 4}), 'SDICT_E_LIMIT,SDICT_E_SHAPE')
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

# ---- 9. not a checkpoint at all -------------------------------------------------------------------
add('empty_file', b'', 'SDICT_E_FORMAT,SDICT_E_TRUNCATED')
add('three_bytes', b'abc', 'SDICT_E_FORMAT,SDICT_E_TRUNCATED')
add('html_error_page', b'<html><body>404</body></html>', 'SDICT_E_FORMAT')
add('git_lfs_pointer', b'version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n', 'SDICT_E_FORMAT')

with open(os.path.join(out, 'manifest.tsv'), 'w') as f:
    for name, st in cases:
        assert 'SDICT_OK' not in st
        f.write('%s\t%s\n' % (name, st))
print('%d hostile cases written to %s' % (len(cases), out))
