# Whole pickled models (issue 13): `statedict extract` against torch itself, per generation
# (labels "extract", "interop", "torchGEN"), registered with sdict_torch_test as NAME@GEN:
#
#   extract_models@GEN   torch.save(model) of resnet18, mobilenet_v2, a ModuleDict/ModuleList
#                        model, a custom module (non-persistent buffer, None parameter, tied
#                        weights), DataParallel, the legacy layout, protocol 4, and a YOLO-style
#                        half-precision checkpoint dict: the extracted state_dict equals
#                        model.state_dict() (keys, order, dtypes, values, sharing, _metadata) and
#                        loads with strict=True; the malicious fixtures under --inert: no file
#                        appears, a clear result, and `scan` lists every global pickletools finds
#                        (tests/torch/extract_check.py); quantized modules, dict subclasses as
#                        _modules, a set subclass as _non_persistent_buffers_set exit 3; a list
#                        there is honoured; a class with get_extra_state is named in a warning
if(TARGET statedict_cli)
  sdict_torch_test(extract_models LABELS extract
    COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/torch/extract_check.py
            $<TARGET_FILE:statedict_cli> ${CMAKE_CURRENT_BINARY_DIR}/extract/models_@GEN@
            ${SDICT_SHARED_FIXTURES}
    PROPERTIES TIMEOUT 900)
endif()

#   extract_optimizer@GEN  torch.save(optimizer) of SGD (two param groups) and Adam, and a
#                          checkpoint dict holding model and optimizer: the extracted file equals
#                          optimizer.state_dict() (tests/torch/optim_object_check.py)
if(TARGET statedict_cli)
  sdict_torch_test(extract_optimizer GENERATIONS 1.13 2.14 LABELS extract
    COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/torch/optim_object_check.py
            $<TARGET_FILE:statedict_cli> ${CMAKE_CURRENT_BINARY_DIR}/extract/optim_@GEN@
    PROPERTIES TIMEOUT 120)
endif()
