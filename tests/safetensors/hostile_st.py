"""Hostile safetensors files, one (or more) per rule of the safetensors Rust core
(safetensors/src/tensor.rs: read_metadata, Metadata::validate, Dtype), plus the cases where
statedict is stricter (ambiguous or polyglot files).

Standard library only. Used by tests/hostile/gen_hostile.py (the hostile harness: library
loaders and CLI, exit 3) and by tests/safetensors/hostile_verdict.py (the real safetensors
package's verdict on the same bytes).

cases() yields (name, data, statuses, want): statuses the sdict_status names statedict may
refuse the file with, want words its message must contain (the Rust error's name).
"""
import json, struct

MAX = 100_000_000


def st(header, data=b'', raw=None, pad=True):
    """A safetensors file: header a dict (json.dumps, compact as the Rust writer) or raw bytes."""
    h = raw if raw is not None else json.dumps(header, separators=(',', ':')).encode()
    if pad and raw is None:
        h += b' ' * (-(8 + len(h)) % 8)
    return struct.pack('<Q', len(h)) + h + data


def T(dtype='F32', shape=(1,), offs=(0, 4)):
    return {'dtype': dtype, 'shape': list(shape), 'data_offsets': list(offs)}


def raw_entry(body):
    """A file whose header is '{"w":BODY}' (BODY raw JSON text) over 4 data bytes."""
    return st(None, b'\0' * 4, raw=b'{"w":' + body + b'}')


def tar_polyglot():
    """A 512-byte file that is a valid safetensors file (one metadata string) and, for Python's
    tarfile, a valid member header: the string carries the octal number fields."""
    pre = b'{"__metadata__":{"k":"'
    post = b'"}}'
    n = 512 - 8
    body = bytearray(b' ' * (n - len(pre) - len(post)))
    blk = bytearray(struct.pack('<Q', n) + pre + bytes(body) + post)
    for off, text in ((100, b'0000644 '), (108, b'0000000 '), (116, b'0000000 '),
                      (124, b'00000000000 '), (136, b'00000000000 ')):
        blk[off:off + len(text)] = text
    blk[148:156] = b' ' * 8
    chk = sum(blk)  # the checksum field counts as spaces, as it is now
    blk[148:156] = b'%07o ' % chk
    return bytes(blk)


# Opcodes Python's unpickler takes where statedict's machine stops on a rule of its own (a
# limit, text only Python's int()/float() parse, SETITEM on a list): placed before the global of
# a pickle polyglot, they must not hide it (the probe calls such a stop ambiguous).
STRICT_PREFIXES = {
    'put_sign': b'p+0\n',              # PyLong_FromString takes a sign
    'put_space': b'p 0\n',             # ... and leading spaces
    'int_hex': b'I0x10\n0',            # INT: strtol base 0 (Python < 3.14)
    'long_underscore': b'L1_0\n0',     # LONG: int() takes underscores
    'marks_1001': b'(' * 1001,         # past statedict's max_depth, no limit in Python
    'setitem_list': b']K\x05aK\x00K\x07s0',  # [5]; l[0] = 7; POP
}


def pickle_polyglot(payload=b"c__builtin__\nlen\n(S'x'\ntR."):
    """A valid safetensors file (one U8 tensor) that Python's pickle, run from byte 0 as torch.load
    runs it on a file that is no zip or tar, reads as a pickle calling a global: the header
    length's low byte is 'T' (BINSTRING), whose 4-byte length skips to a metadata string where
    SHORT_BINSTRING opcodes hop to the data section, a protocol-0 pickle (by default calling
    builtins.len: harmless, but any global would do)."""
    skip = 1000                         # the BINSTRING's length: bytes 1 and 2 of the u64
    n = ord('T') + 256 * skip           # header length, bytes 0..3 = 'T', skip lo, skip hi, 0
    pre = ('{"x":{"dtype":"U8","shape":[%d],"data_offsets":[0,%d]},"__metadata__":{"k":"'
           % (len(payload), len(payload))).encode()
    body = pre + b'a' * (5 + skip - 8 - len(pre))   # the pickle resumes at file offset 5 + skip
    hops = b''
    while True:
        left = n - len(body) - len(hops)
        if left <= 2 + 126:             # the last hop holds the end of the JSON
            k = left - 2
            hops += b'U' + bytes([k]) + b'"}}' + b' ' * (k - 3)
            break
        hops += b'U' + bytes([100]) + b'b' * 100
    hdr = body + hops
    assert len(hdr) == n
    json.loads(hdr)
    return struct.pack('<Q', n) + hdr + payload


def cases():
    FMT, LIM, TRU, SHP, DT, STO = ('SDICT_E_FORMAT', 'SDICT_E_LIMIT', 'SDICT_E_TRUNCATED',
                                   'SDICT_E_SHAPE', 'SDICT_E_DTYPE', 'SDICT_E_STORAGE')
    ok1 = {'w': T()}
    # ---- header length (read_metadata) ----
    yield 'st_header_too_large', struct.pack('<Q', MAX + 1) + b'{}' + b' ' * 6, LIM, 'HeaderTooLarge'
    yield 'st_header_len_u64_max', struct.pack('<Q', 2**64 - 1) + b'{}' + b' ' * 6, LIM, 'HeaderTooLarge'
    yield 'st_header_past_end', struct.pack('<Q', 64) + b'{}' + b' ' * 6, TRU, 'InvalidHeaderLength'
    # ---- UTF-8 ----
    yield 'st_header_not_utf8', st(None, b'\0' * 4, raw=b'{"w\xff":' + json.dumps(T()).encode() + b'}'), FMT, 'InvalidHeader'
    yield 'st_header_utf8_surrogate', st(None, b'\0' * 4, raw=b'{"w\xed\xa0\x80":' + json.dumps(T()).encode() + b'}'), FMT, 'InvalidHeader'
    yield 'st_header_utf8_overlong', st(None, b'\0' * 4, raw=b'{"w\xc0\xaf":' + json.dumps(T()).encode() + b'}'), FMT, 'InvalidHeader'
    yield 'st_header_utf8_truncated', st(None, b'', raw=b'{}\xe2\x82'), FMT, 'InvalidHeader'
    # ---- JSON ----
    yield 'st_json_truncated', st(None, b'', raw=b'{"w":{"dtype":"F32"'), FMT, 'not valid JSON'
    yield 'st_json_array', st(None, b'', raw=b'[]'), FMT, 'not an object'
    yield 'st_json_trailing_text', st(None, b'\0' * 4, raw=json.dumps(ok1).encode() + b' x'), FMT, 'not valid JSON'
    yield 'st_json_control_char', st(None, b'\0' * 4, raw=b'{"w\x01":' + json.dumps(T()).encode() + b'}'), FMT, 'not valid JSON'
    yield 'st_json_lone_surrogate', st(None, b'\0' * 4, raw=b'{"w\\ud800":' + json.dumps(T()).encode() + b'}'), FMT, 'not valid JSON'
    yield 'st_json_nul_in_name', st(None, b'\0' * 4, raw=b'{"w\\u0000":' + json.dumps(T()).encode() + b'}'), FMT, 'not valid JSON'
    deep = b'[       ' * 3000 + b']' * 3000   # past jansson's depth of 2048, one '[' per 8 bytes
    yield 'st_json_deep_nesting', raw_entry(b'{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":' + deep + b'}'), FMT, 'not valid JSON'
    # ---- duplicate keys (jansson's JSON_REJECT_DUPLICATES) ----
    yield 'st_duplicate_tensor', st(None, b'\x07', raw=b'{"a":' + json.dumps(T('F32', [0], [0, 0])).encode() +
                                    b',"a":' + json.dumps(T('U8', [1], [0, 1])).encode() + b'}'), FMT, 'duplicate'
    yield 'st_duplicate_metadata', st(None, b'\0' * 4, raw=b'{"__metadata__":{},"__metadata__":{},"w":' +
                                      json.dumps(T()).encode() + b'}'), FMT, 'duplicate'
    yield 'st_duplicate_field', raw_entry(b'{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}'), FMT, 'duplicate'
    yield 'st_duplicate_metadata_key', st(None, b'\0' * 4, raw=b'{"__metadata__":{"a":"1","a":"2"},"w":' +
                                          json.dumps(T()).encode() + b'}'), FMT, 'duplicate'
    # ---- __metadata__: str -> str ----
    yield 'st_metadata_int_value', st({'__metadata__': {'a': 1}, 'w': T()}, b'\0' * 4), FMT, 'not a string'
    yield 'st_metadata_nested', st({'__metadata__': {'a': {'b': 'c'}}, 'w': T()}, b'\0' * 4), FMT, 'not a string'
    yield 'st_metadata_string', st({'__metadata__': 'x', 'w': T()}, b'\0' * 4), FMT, '__metadata__'
    yield 'st_metadata_list', st({'__metadata__': ['a'], 'w': T()}, b'\0' * 4), FMT, '__metadata__'
    # ---- tensor entries: fields and types ----
    yield 'st_entry_not_object', st({'w': 5}), FMT, 'not a JSON object'
    yield 'st_entry_missing_dtype', st({'w': {'shape': [1], 'data_offsets': [0, 4]}}, b'\0' * 4), FMT, '"dtype"'
    yield 'st_entry_missing_shape', st({'w': {'dtype': 'F32', 'data_offsets': [0, 4]}}, b'\0' * 4), FMT, '"shape"'
    yield 'st_entry_missing_offsets', st({'w': {'dtype': 'F32', 'shape': [1]}}, b'\0' * 4), FMT, '"data_offsets"'
    yield 'st_dtype_unknown', st({'w': T('F128')}, b'\0' * 4), DT, 'unknown safetensors dtype'
    yield 'st_dtype_lowercase', st({'w': T('f32')}, b'\0' * 4), DT, 'unknown safetensors dtype'
    yield 'st_dtype_torch_name', st({'w': T('float32')}, b'\0' * 4), DT, 'unknown safetensors dtype'
    yield 'st_dtype_not_string', st({'w': T(32)}, b'\0' * 4), FMT, 'not a string'
    yield 'st_shape_not_array', st({'w': {'dtype': 'F32', 'shape': 1, 'data_offsets': [0, 4]}}, b'\0' * 4), SHP, 'not an array'
    yield 'st_shape_negative', st({'w': T('F32', [-1])}, b'\0' * 4), SHP, 'negative'
    yield 'st_shape_fraction', st({'w': T('F32', [1.5])}, b'\0' * 4), SHP, 'fraction'
    yield 'st_shape_float_integral', st({'w': T('F32', [1.0])}, b'\0' * 4), SHP, 'fraction'
    yield 'st_shape_exponent', raw_entry(b'{"dtype":"F32","shape":[1e0],"data_offsets":[0,4]}'), SHP, 'fraction'
    yield 'st_shape_string', st({'w': T('F32', ['1'])}, b'\0' * 4), SHP, 'not a number'
    yield 'st_shape_past_u64', raw_entry(b'{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,4]}'), FMT, 'not valid JSON'
    yield 'st_shape_u64_with_zero', st(None, b'', raw=b'{"w":{"dtype":"F32","shape":[0,18446744073709551615],"data_offsets":[0,0]}}'), FMT, 'not valid JSON'
    yield 'st_offsets_one', st({'w': T('F32', [1], [0])}, b'\0' * 4), FMT, 'two numbers'
    yield 'st_offsets_three', st({'w': T('F32', [1], [0, 4, 4])}, b'\0' * 4), FMT, 'two numbers'
    yield 'st_offsets_negative', st({'w': T('F32', [1], [-4, 0])}, b'\0' * 4), SHP, 'negative'
    yield 'st_offsets_not_array', st({'w': {'dtype': 'F32', 'shape': [1], 'data_offsets': '0,4'}}, b'\0' * 4), FMT, 'two numbers'
    # ---- offsets tile the data section (validate) ----
    yield 'st_offsets_hole', st({'a': T('F32', [1], [0, 4]), 'b': T('F32', [1], [8, 12])}, b'\0' * 12), STO, 'InvalidOffset'
    yield 'st_offsets_overlap', st({'a': T('F32', [2], [0, 8]), 'b': T('F32', [1], [4, 8])}, b'\0' * 8), STO, 'InvalidOffset'
    yield 'st_offsets_alias', st({'a': T('F32', [1], [0, 4]), 'b': T('F32', [1], [0, 4])}, b'\0' * 4), STO, 'InvalidOffset'
    yield 'st_offsets_not_from_zero', st({'w': T('F32', [1], [4, 8])}, b'\0' * 8), STO, 'InvalidOffset'
    yield 'st_offsets_reversed', st({'a': T('F32', [0], [0, 0]), 'w': T('F32', [1], [4, 0])}, b'\0' * 4), STO, 'InvalidOffset'
    # ---- sizes (validate) ----
    yield 'st_size_mismatch', st({'w': T('F32', [2], [0, 4])}, b'\0' * 4), SHP, 'TensorInvalidInfo'
    yield 'st_size_mismatch_bigger', st({'w': T('U8', [2], [0, 4])}, b'\0' * 4), SHP, 'TensorInvalidInfo'
    yield 'st_numel_overflow', st({'w': T('F32', [2**32, 2**32], [0, 4])}, b'\0' * 4), SHP, 'ValidationOverflow'
    yield 'st_nbits_overflow', st({'w': T('F64', [2**58], [0, 4])}, b'\0' * 4), SHP, 'ValidationOverflow'
    yield 'st_numel_overflow_before_zero', st({'w': T('F32', [2**62, 2**62, 0], [0, 0])}), SHP, 'ValidationOverflow'
    yield 'st_zero_numel_huge_strides', st({'w': T('F32', [0, 2**62, 2**62], [0, 0])}), SHP, 'overflow'
    yield 'st_f4_odd_count', st({'w': T('F4', [3], [0, 2])}, b'\0' * 2), SHP, 'MisalignedSlice'
    yield 'st_f6_one_element', st({'w': T('F6_E2M3', [1], [0, 1])}, b'\0'), SHP, 'MisalignedSlice'
    yield 'st_f6_size_mismatch', st({'w': T('F6_E3M2', [4], [0, 4])}, b'\0' * 4), SHP, 'TensorInvalidInfo'
    # ---- the data section ends with the file ----
    yield 'st_trailing_bytes', st(ok1, b'\0' * 4 + b'\0' * 16), FMT, 'MetadataIncompleteBuffer'
    yield 'st_polyglot_zip_appended', st(ok1, b'\0' * 4 + b'PK\x05\x06' + b'\0' * 18), FMT, 'MetadataIncompleteBuffer'
    yield 'st_data_truncated', st({'w': T('F32', [4], [0, 16])}, b'\0' * 4), TRU, 'MetadataIncompleteBuffer'
    yield 'st_empty_header_with_data', st({}, b'\0' * 4), FMT, 'MetadataIncompleteBuffer'
    # ---- cost: JSON containers jansson would hold at ~200 bytes each ----
    dense = b'{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":[' + b'{},' * 20000 + b'{}]}}'
    yield 'st_dense_json', st(None, b'\0' * 4, raw=dense + b' ' * (-(8 + len(dense)) % 8)), LIM, 'JSON objects and arrays'
    # ---- polyglot with torch's tar format ----
    yield 'st_tar_polyglot', tar_polyglot(), FMT, 'ambiguous'
    # ---- polyglot with the pickle stream torch.load reads from files that are no zip or tar ----
    yield 'st_pickle_polyglot', pickle_polyglot(), FMT, 'ambiguous'
    for name, prefix in STRICT_PREFIXES.items():
        yield ('st_pickle_polyglot_' + name, pickle_polyglot(prefix + b"c__builtin__\nlen\n(S'x'\ntR."),
               FMT, 'ambiguous')


# Cases the safetensors package loads (safe_open + every tensor) while statedict refuses them,
# and why statedict does: the table in README.md ("Where statedict and safetensors disagree").
STRICTER = {
    'st_duplicate_tensor': 'duplicate keys: serde keeps the last "a" (the first entry, a zero-size '
                           'tensor, vanishes); statedict refuses a header that two JSON readers can '
                           'read differently',
    'st_duplicate_metadata_key': 'duplicate keys inside __metadata__: serde keeps the last value',
    'st_json_nul_in_name': 'a tensor name with U+0000: jansson cannot hold it in an object key',
    'st_shape_u64_with_zero': 'a dimension past 2^63 - 1 (of a zero-size tensor): jansson reads '
                              'integers as int64, and no torch tensor can have that size',
    'st_zero_numel_huge_strides': 'a zero-size tensor whose contiguous strides overflow int64: '
                                  'torch\'s own stride computation would overflow too',
    'st_dense_json': 'an ignored field holding 20,000 empty objects: more JSON containers than one '
                     'per 8 bytes, which would cost jansson ~70 times the header\'s size',
    'st_tar_polyglot': 'the same 512 bytes are a tar header Python\'s tarfile accepts, so '
                       'torch.load reads the file as a torch < 0.4 tar archive: ambiguous',
    'st_pickle_polyglot': 'Python\'s pickle, run from byte 0 as torch.load runs it (torch < '
                          '2.14, or a name not ending in .safetensors), reads a pickle calling a '
                          'global from the same bytes: ambiguous',
}
STRICTER.update(('st_pickle_polyglot_' + name,
                 'the pickle polyglot, its global behind opcodes Python reads on and statedict\'s '
                 'machine stops at (' + name + '): ambiguous') for name in STRICT_PREFIXES)
