# TorchScript archives (issue 13): `statedict extract` of torch.jit.save files against
# torch.jit.load(f).state_dict() (tests/torch/script_check.py), registered with sdict_torch_test:
#
#   extract_script@GEN   (1.13 and 2.14) torch.jit.script and torch.jit.trace of resnet18 and of
#                        a module with buffers (persistent, non-persistent, half), a ModuleList
#                        with a BatchNorm and tied weights, saved by torch GEN: keys, order, dtypes, values,
#                        sharing and _metadata equal torch's (safetensors output too where GEN
#                        has safetensors); `ls` refuses pointing at extract; hostile archives
#                        made from it (code naming a missing attribute, a parameter that is no
#                        tensor, parameters on a non-module class, a missing or oversized
#                        record, a malformed name list, a 7 MB code record) exit 3 with a message
#                        or extract in linear time; code text torch reads alike (no spaces around
#                        ':' or '=', comments at column 0 or after a declaration, a 4-space
#                        indent, a fake __parameters__ line in a string) extracts as torch loads
#                        it, text torch.jit.load refuses (tab indent, ';', an Optional buffer), a
#                        module the code does not declare and 190,000 classes in a record with a
#                        4 KB name exit 3
#   fixture_script@1.13  the TorchScript archives of SDICT_SHARED_FIXTURES (versions 1, 3, 4,
#                        mangled class names, dotted prefixes, constants, traced inputs) against
#                        torch 1.13's torch.jit.load(f).state_dict(), label "fixture"
if(TARGET statedict_cli)
  sdict_torch_test(extract_script GENERATIONS 1.13 2.14 LABELS extract
    COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/torch/script_check.py models
            $<TARGET_FILE:statedict_cli> ${CMAKE_CURRENT_BINARY_DIR}/extract/script_@GEN@
    PROPERTIES TIMEOUT 300)
  sdict_torch_test(fixture_script GENERATIONS 1.13 LABELS fixture
    COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/torch/script_check.py fixtures
            $<TARGET_FILE:statedict_cli> ${CMAKE_CURRENT_BINARY_DIR}/extract/script_fixtures
            ${SDICT_SHARED_FIXTURES}
    PROPERTIES TIMEOUT 300)
endif()
