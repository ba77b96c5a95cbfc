# Legacy-format and pickle differentials (issue 11): files torch 1.13 reads as another structure
# than statedict would (Python's tarfile, the magic-number stream, _pickle.c), each with a payload
# torch runs; statedict's ls, scan and verify must refuse them (tests/torch/legacy_diff.py).
# torch 1.13 only: its torch.load defaults to weights_only=False, the unrestricted reading.
if(TARGET statedict_cli)
  sdict_torch_test(legacy_diff
    COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/torch/legacy_diff.py
            $<TARGET_FILE:statedict_cli>
    GENERATIONS 1.13
    LABELS hostile
    PROPERTIES TIMEOUT 600)
endif()
