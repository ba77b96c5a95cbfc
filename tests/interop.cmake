# Interop tests against real PyTorch (label "interop"), once per torch generation
# (sdict_torch_test in tests/CMakeLists.txt: NAME@1.13, NAME@2.6, NAME@2.14): for every
# checkpoint that tests/torch/gen_fixtures.py writes with that torch, `statedict dump --json`
# must agree with what the same torch's torch.load returns (tests/torch/torch_dump.py), compared
# by tests/torch/compare_dump.py. Every test skips (exit 77) when its torch cannot be imported.
#
#   interop_generate@GEN  FIXTURES_SETUP: writes the checkpoints into interop/GEN, once per
#                         ctest run (seeded, about 50 MB, a few seconds)
#   interop_<file>@GEN    one comparison per checkpoint that generation can write
#   interop_convert_<file>@GEN
#                         high_rank.pt and its legacy twin through `statedict convert` and back
#                         into that torch: same tree, values, strides and sharing
#   interop_compare_self  compare_dump.py's own test (needs no torch)
#   interop_zip64         the > 4 GiB checkpoint (torch 1.13), generated, compared and deleted in
#                         one test; skips when the disk has less than ~10 GB free
#                         (label "interop;big")
if(NOT TARGET statedict_cli)
  message(STATUS "interop tests: no statedict CLI target, not registered")
  return()
endif()

set(SDICT_TORCH_DIR ${CMAKE_CURRENT_SOURCE_DIR}/torch)
set(SDICT_INTEROP_DIR ${CMAKE_CURRENT_BINARY_DIR}/interop)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${SDICT_TORCH_DIR}/gen_fixtures.py)

foreach(gen ${SDICT_TORCH_GENERATIONS})
  # The fixture names come from the generator itself (--list needs no torch), so the list of
  # tests cannot drift from the files written.
  execute_process(COMMAND ${SDICT_PYTHON} ${SDICT_TORCH_DIR}/gen_fixtures.py --list ${gen}
                  OUTPUT_VARIABLE _sdict_interop_files RESULT_VARIABLE _sdict_rc
                  OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _sdict_rc EQUAL 0)
    message(WARNING "interop tests: gen_fixtures.py --list ${gen} failed; not registered")
    continue()
  endif()
  string(REPLACE "\n" ";" _sdict_interop_files "${_sdict_interop_files}")

  sdict_torch_test(interop_generate GENERATIONS ${gen}
    COMMAND @PYTHON@ ${SDICT_TORCH_DIR}/gen_fixtures.py ${SDICT_INTEROP_DIR}/@GEN@
    PROPERTIES FIXTURES_SETUP sdict_interop_files@GEN@ TIMEOUT 600)
  foreach(f ${_sdict_interop_files})
    sdict_torch_test(interop_${f} GENERATIONS ${gen}
      COMMAND @PYTHON@ ${SDICT_TORCH_DIR}/interop_check.py $<TARGET_FILE:statedict_cli>
              ${SDICT_INTEROP_DIR}/@GEN@/${f} ${SDICT_INTEROP_DIR}/@GEN@/dumps
      PROPERTIES FIXTURES_REQUIRED sdict_interop_files@GEN@ TIMEOUT 600)
  endforeach()
  # High-rank tensors also go through `statedict convert` and back into torch.
  foreach(f high_rank.pt legacy_high_rank.pt)
    sdict_torch_test(interop_convert_${f} GENERATIONS ${gen}
      COMMAND @PYTHON@ ${SDICT_TORCH_DIR}/convert_check.py $<TARGET_FILE:statedict_cli>
              ${SDICT_INTEROP_DIR}/@GEN@/${f} ${SDICT_INTEROP_DIR}/@GEN@/converted
      PROPERTIES FIXTURES_REQUIRED sdict_interop_files@GEN@ TIMEOUT 600)
  endforeach()
endforeach()

add_test(NAME interop_compare_self COMMAND ${SDICT_PYTHON} ${SDICT_TORCH_DIR}/selftest_compare.py)
set_tests_properties(interop_compare_self PROPERTIES LABELS interop TIMEOUT 60)

sdict_torch_test(interop_zip64 GENERATIONS 1.13 LABELS big
  COMMAND @PYTHON@ ${SDICT_TORCH_DIR}/interop_big.py $<TARGET_FILE:statedict_cli>
          ${SDICT_INTEROP_DIR}/big
  PROPERTIES TIMEOUT 1800 RUN_SERIAL TRUE)

# The committed example checkpoints (examples/make_examples.py, torch 1.13) get the same
# comparison against every generation's torch.load.
foreach(f lenet.pt checkpoint.tar gan.pt)
  sdict_torch_test(interop_example_${f}
    COMMAND @PYTHON@ ${SDICT_TORCH_DIR}/interop_check.py $<TARGET_FILE:statedict_cli>
            ${CMAKE_SOURCE_DIR}/examples/data/${f} ${SDICT_INTEROP_DIR}/@GEN@/dumps-examples
    PROPERTIES TIMEOUT 300)
endforeach()

# Strings kept exactly: strs with lone surrogates and control characters that torch wrote come
# out of `dump --json` as json.dumps writes them and through `convert` (both layouts) as torch
# loads them back; bytearray, torch.Size, frozenset, Parameter flags and Python attributes
# survive convert (tests/torch/strings_convert_check.py).
sdict_torch_test(interop_strings_convert
  COMMAND @PYTHON@ ${SDICT_TORCH_DIR}/strings_convert_check.py $<TARGET_FILE:statedict_cli>
          ${SDICT_INTEROP_DIR}/@GEN@/strings
  PROPERTIES TIMEOUT 300)
