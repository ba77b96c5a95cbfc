# Distributed checkpoint folders (src/dcp_read.c).
#
#   dcp_hostile     (labels "hostile;cli"; standard library only) DCP folders with classes
#                   outside DCP's, fields of wrong types, chunk geometry lies, path escapes,
#                   lengths past the file and no .metadata: ls and verify refuse each naming the
#                   fault, nothing runs; the valid folder is listed and reassembled, and valid
#                   folders in torch 2.2's and 2.3's layouts (CPython 3.10 and 3.11 pickles)
#                   read exactly as dcp_to_torch_save reads them
#   dcp_read@GEN    tests/dcp/gen_dcp.py: real dcp.save from 1, 2 and 4 processes (gloo on
#                   127.0.0.1), read by statedict exactly as torch's dcp_to_torch_save reads them
#   dcp_write@GEN   tests/dcp/write_dcp.py: convert --format dcp, checked against torch's own
#                   torch_save_to_dcp and loaded by dcp.load from 1 and 2 processes
#   dcp_kill@1.13   tests/dcp/kill_dcp.py: saves killed at random points leave either a complete
#                   old or new checkpoint or an unfinished one, never a mix
if(TARGET statedict_cli)
  add_test(NAME dcp_hostile COMMAND ${SDICT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/dcp/hostile_dcp.py
           $<TARGET_FILE:statedict_cli> ${CMAKE_CURRENT_BINARY_DIR}/dcp/hostile)
  set_tests_properties(dcp_hostile PROPERTIES LABELS "hostile;cli" TIMEOUT 300)
  sdict_torch_test(dcp_read
    COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/dcp/gen_dcp.py $<TARGET_FILE:statedict_cli>
            ${CMAKE_CURRENT_BINARY_DIR}/dcp/@GEN@/read
    GENERATIONS 2.6 2.14 LABELS dcp PROPERTIES TIMEOUT 900 RESOURCE_LOCK gloo)
  sdict_torch_test(dcp_kill
    COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/dcp/kill_dcp.py $<TARGET_FILE:statedict_cli>
            ${CMAKE_CURRENT_BINARY_DIR}/dcp/@GEN@/kill
    GENERATIONS 1.13 LABELS dcp PROPERTIES TIMEOUT 300)
  sdict_torch_test(dcp_write
    COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/dcp/write_dcp.py $<TARGET_FILE:statedict_cli>
            ${CMAKE_CURRENT_BINARY_DIR}/dcp/@GEN@/write
    GENERATIONS 2.6 2.14 LABELS dcp PROPERTIES TIMEOUT 900 RESOURCE_LOCK gloo)
endif()
