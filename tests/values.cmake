# Values beyond tensors against real torch (label "values"), once per torch generation
# (sdict_torch_test in tests/CMakeLists.txt): tests/torch/values_check.py writes bare storages,
# dicts keyed by dtypes/tuples/frozensets/None/bools, checkpoints whose storages were saved on
# cuda:0, mps, meta, xpu:1 and privateuseone:0 (location tags rewritten in a CPU file), unknown
# storage classes and numpy arrays under pickle protocol 5 with that torch, and checks
# `statedict ls`, `dump --json`, `show`, `diff`, `scan` and `convert` (loaded back by the same
# torch) against it. Skips (77) when the generation's torch cannot be imported.
if(NOT TARGET statedict_cli)
  return()
endif()
sdict_torch_test(values_check LABELS values
  COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/torch/values_check.py
          $<TARGET_FILE:statedict_cli> ${CMAKE_CURRENT_BINARY_DIR}/values/@GEN@
  PROPERTIES TIMEOUT 600)
