#!/usr/bin/python3
"""Regenerates the fuzz seed corpus (fuzz/corpus/<target>/) from real torch output.

Run with Debian's /usr/bin/python3 (torch 1.13). Seeds are small on purpose: the fuzzer mutates
them, and the replay tests run them all on every CI run.
"""
import collections, io, os, pickle, shutil, sys, zipfile
import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))
torch.manual_seed(0)

def tiny_net():
    sd = collections.OrderedDict()
    sd['fc.weight'] = torch.randn(3, 2)
    sd['fc.bias'] = torch.randn(3)
    sd['bn.running_mean'] = torch.zeros(3)
    sd['bn.num_batches_tracked'] = torch.tensor(5)
    sd._metadata = collections.OrderedDict([('', {'version': 1}), ('bn', {'version': 2})])
    return sd

base = torch.arange(12, dtype=torch.float32)
objects = {
    'state_dict': tiny_net(),
    'checkpoint': {'epoch': 3, 'loss': 0.25, 'model_state_dict': tiny_net(),
                   'optimizer_state_dict': {'state': {0: {'momentum_buffer': torch.ones(2)}},
                                            'param_groups': [{'lr': 0.1, 'momentum': 0.9,
                                                              'params': [0, 1]}]}},
    'views': {'base': base, 'slice': base[2:8].view(2, 3), 't': base.view(3, 4).t(),
              'scalar': torch.tensor(1.5, dtype=torch.float64)},
    'dtypes': {str(d): torch.ones(2, dtype=d) for d in
               [torch.float16, torch.bfloat16, torch.int8, torch.uint8, torch.bool,
                torch.complex64, torch.int64, torch.int16, torch.int32]},
    'values': {'none': None, 'big': 2**80, 'neg': -2**70, 'f': float('nan'), 's': 'héllo',
               'b': b'\x00\xff', 'l': [1, (2, 3)], 'set': {1, 2}, 'nested': {0: {1: 'x'}}},
    'empty': torch.empty(0),
    # Python types the value model keeps (sdict_pytype), numpy through its reconstructors
    'pytypes': {'size': torch.Size([2, 3]), 'fs': frozenset({1}), 'ba': bytearray(b'x'),
                'np': [np.float32(1.5), np.int8(-5), np.bool_(True), np.uint64(2**64 - 1),
                       np.arange(6, dtype=np.float32).reshape(2, 3),
                       np.asfortranarray(np.ones((2, 2))), np.arange(3, dtype='>i4')]},
    # what torch 2.x's weights-only loader allows beyond plain tensors (as 1.13 writes them)
    'torch2x': {'counter': collections.Counter({3: 1, 5: 2}), 'dev': torch.device('cuda', 1),
                'z': complex(1.5, -2), 'qs': torch.per_channel_affine, 'lay': torch.sparse_csr,
                'q': torch.quantize_per_tensor(torch.tensor([1.0, 2.0]), 0.5, 1, torch.quint8),
                'qc': torch.quantize_per_channel(torch.ones(2, 2), torch.tensor([0.1, 0.2],
                                                 dtype=torch.double), torch.tensor([0, 1]), 0,
                                                 torch.qint8),
                'coo': torch.tensor([[0, 1.5], [2, 0]]).to_sparse(),
                'csr': torch.tensor([[0, 1.5], [2, 0]]).to_sparse_csr()},
}

def emit(target, name, data):
    d = os.path.join(here, 'corpus', target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)

for t in ['fuzz_zip_read', 'fuzz_pickle', 'fuzz_load', 'fuzz_roundtrip']:
    shutil.rmtree(os.path.join(here, 'corpus', t), ignore_errors=True)

for name, obj in objects.items():
    buf = io.BytesIO()
    torch.save(obj, buf)
    z = buf.getvalue()
    for t in ['fuzz_zip_read', 'fuzz_load', 'fuzz_roundtrip']:
        emit(t, name + '.pt', z)
    with zipfile.ZipFile(io.BytesIO(z)) as zf:
        emit('fuzz_pickle', name + '.pkl', zf.read('archive/data.pkl'))
    legacy = io.BytesIO()
    torch.save(obj, legacy, _use_new_zipfile_serialization=False)
    emit('fuzz_load', name + '.legacy', legacy.getvalue())
    emit('fuzz_roundtrip', name + '.legacy', legacy.getvalue())

# a whole pickled model (torch.save(model)), for fuzz_pickle's inert modes and
# sdict_object_state_dict; only there: the other targets' corpora are also the unit tests'
# (test_mutate, test_oom), which load every seed without SDICT_LOAD_INERT
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3),
                            torch.nn.ModuleDict({'head': torch.nn.Linear(3, 2)}))
model[2]['head'].weight = torch.nn.Parameter(torch.randn(2, 3))
buf = io.BytesIO()
torch.save(model, buf)
with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
    emit('fuzz_pickle', 'model.pkl', zf.read('archive/data.pkl'))

for proto in range(0, 6):
    emit('fuzz_pickle', 'plain_p%d.pkl' % proto, pickle.dumps(objects['values'], protocol=proto))
print('corpus written')

# ---- fuzz_safetensors: hand-built safetensors files (standard library only), laid out as
# safetensors' serialize writes them: entries sorted by dtype alignment then name, the header
# padded with spaces to a multiple of 8, optional __metadata__ first.
import json, struct
ST_BITS = {'BOOL': 8, 'F4': 4, 'F6_E2M3': 6, 'F6_E3M2': 6, 'U8': 8, 'I8': 8, 'F8_E5M2': 8,
           'F8_E4M3': 8, 'F8_E8M0': 8, 'F8_E4M3FNUZ': 8, 'F8_E5M2FNUZ': 8, 'I16': 16, 'U16': 16,
           'F16': 16, 'BF16': 16, 'I32': 32, 'U32': 32, 'F32': 32, 'C64': 64, 'F64': 64,
           'I64': 64, 'U64': 64}

def st_file(tensors, metadata=None):
    """tensors: [(name, dtype, shape)], data bytes 0, 1, 2, ... in order."""
    hdr, data = {}, b''
    if metadata is not None:
        hdr['__metadata__'] = metadata
    for name, dt, shape in tensors:
        n = 1
        for d in shape:
            n *= d
        nb = n * ST_BITS[dt] // 8
        hdr[name] = {'dtype': dt, 'shape': list(shape), 'data_offsets': [len(data), len(data) + nb]}
        data += bytes((len(data) + i) % 251 for i in range(nb))
    h = json.dumps(hdr, separators=(',', ':')).encode()
    h += b' ' * (-(8 + len(h)) % 8)
    return struct.pack('<Q', len(h)) + h + data

shutil.rmtree(os.path.join(here, 'corpus', 'fuzz_safetensors'), ignore_errors=True)
emit('fuzz_safetensors', 'all_dtypes.safetensors',
     st_file([('t.' + dt.lower(), dt, (2, 4)) for dt in ST_BITS], {'format': 'pt'}))
emit('fuzz_safetensors', 'state_dict.safetensors',
     st_file([('fc.bias', 'F32', (3,)), ('fc.weight', 'F32', (3, 2)), ('bn.num', 'I64', ()),
              ('empty', 'F16', (0, 3))], {'format': 'pt', 'note': 'h\u00e9llo'}))
emit('fuzz_safetensors', 'no_metadata.safetensors', st_file([('a', 'U8', (5,)), ('b', 'BF16', (2, 2))]))
emit('fuzz_safetensors', 'metadata_only.safetensors', st_file([], {'k': 'v'}))
emit('fuzz_safetensors', 'sub_byte.safetensors',
     st_file([('f4', 'F4', (2, 3)), ('f6a', 'F6_E2M3', (4,)), ('f6b', 'F6_E3M2', (8,))]))
emit('fuzz_safetensors', 'trailing.safetensors', st_file([('a', 'F32', (1,))]) + b'\0' * 8)
print('safetensors corpus written')
