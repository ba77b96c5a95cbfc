# Interop tests against real PyTorch (label "interop"): for every checkpoint that
# tests/torch/gen_fixtures.py writes with torch, `statedict dump --json` must agree with what
# torch.load returns (tests/torch/torch_dump.py), compared by tests/torch/compare_dump.py.
# Every test skips (exit 77) when ${SDICT_PYTHON} cannot import torch.
#
#   interop_generate      FIXTURES_SETUP: writes the checkpoints into the build tree, once per
#                         ctest run (seeded, about 50 MB, a few seconds)
#   interop_<file>        one comparison per checkpoint
#   interop_convert_<file>
#                         high_rank.pt and its legacy twin through `statedict convert` and back
#                         into torch: same tree, values, strides and sharing
#   interop_compare_self  compare_dump.py's own test (needs no torch)
#   interop_zip64         the > 4 GiB checkpoint, generated, compared and deleted in one test;
#                         skips when the disk has less than ~10 GB free (label "interop;big")
if(NOT TARGET statedict_cli)
  message(STATUS "interop tests: no statedict CLI target, not registered")
  return()
endif()

set(SDICT_TORCH_DIR ${CMAKE_CURRENT_SOURCE_DIR}/torch)
set(SDICT_INTEROP_DIR ${CMAKE_CURRENT_BINARY_DIR}/interop)

# The fixture names come from the generator itself (--list needs no torch), so the list of
# tests cannot drift from the files written.
execute_process(COMMAND ${SDICT_PYTHON} ${SDICT_TORCH_DIR}/gen_fixtures.py --list
                OUTPUT_VARIABLE _sdict_interop_files RESULT_VARIABLE _sdict_rc
                OUTPUT_STRIP_TRAILING_WHITESPACE)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${SDICT_TORCH_DIR}/gen_fixtures.py)
if(NOT _sdict_rc EQUAL 0)
  message(WARNING "interop tests: ${SDICT_PYTHON} gen_fixtures.py --list failed; not registered")
  return()
endif()
string(REPLACE "\n" ";" _sdict_interop_files "${_sdict_interop_files}")

add_test(NAME interop_generate
         COMMAND ${SDICT_PYTHON} ${SDICT_TORCH_DIR}/gen_fixtures.py ${SDICT_INTEROP_DIR})
set_tests_properties(interop_generate PROPERTIES
  LABELS interop FIXTURES_SETUP sdict_interop_files SKIP_RETURN_CODE 77 TIMEOUT 600)

# sdict_interop_test(NAME SCRIPT FILE WORKDIR): tests/torch/SCRIPT STATEDICT FILE WORKDIR on a
# generated fixture.
function(sdict_interop_test name script file workdir)
  add_test(NAME ${name}
           COMMAND ${SDICT_PYTHON} ${SDICT_TORCH_DIR}/${script}
                   $<TARGET_FILE:statedict_cli> ${SDICT_INTEROP_DIR}/${file} ${workdir})
  set_tests_properties(${name} PROPERTIES
    LABELS interop FIXTURES_REQUIRED sdict_interop_files SKIP_RETURN_CODE 77 TIMEOUT 600)
endfunction()

foreach(f ${_sdict_interop_files})
  sdict_interop_test(interop_${f} interop_check.py ${f} ${SDICT_INTEROP_DIR}/dumps)
endforeach()
# High-rank tensors also go through `statedict convert` and back into torch.
foreach(f high_rank.pt legacy_high_rank.pt)
  sdict_interop_test(interop_convert_${f} convert_check.py ${f} ${SDICT_INTEROP_DIR}/converted)
endforeach()

add_test(NAME interop_compare_self COMMAND ${SDICT_PYTHON} ${SDICT_TORCH_DIR}/selftest_compare.py)
set_tests_properties(interop_compare_self PROPERTIES LABELS interop TIMEOUT 60)

add_test(NAME interop_zip64
         COMMAND ${SDICT_PYTHON} ${SDICT_TORCH_DIR}/interop_big.py
                 $<TARGET_FILE:statedict_cli> ${SDICT_INTEROP_DIR}/big)
set_tests_properties(interop_zip64 PROPERTIES
  LABELS "interop;big" SKIP_RETURN_CODE 77 TIMEOUT 1800 RUN_SERIAL TRUE)

# The committed example checkpoints (examples/make_examples.py) get the same comparison.
foreach(f lenet.pt checkpoint.tar gan.pt)
  add_test(NAME interop_example_${f}
           COMMAND ${SDICT_PYTHON} ${SDICT_TORCH_DIR}/interop_check.py
                   $<TARGET_FILE:statedict_cli> ${CMAKE_SOURCE_DIR}/examples/data/${f}
                   ${SDICT_INTEROP_DIR}/dumps-examples)
  set_tests_properties(interop_example_${f} PROPERTIES
    LABELS interop SKIP_RETURN_CODE 77 TIMEOUT 300)
endforeach()
