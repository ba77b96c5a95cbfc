# safetensors reading (issue 12), against the real safetensors package (2.6: 0.4.5, 2.14: 0.8;
# torch 1.13's environment has none):
#   st_read_interop@GEN    files save_file writes (every dtype), read by dump/ls/the library
#                          with identical values, order and metadata; hand-built files for the
#                          dtypes no installed torch has, by raw bytes
#   st_hostile_verdict@GEN the real safe_open on every hostile safetensors case of
#                          tests/safetensors/hostile_st.py: both refuse, except the cases listed
#                          (with the reason) in hostile_st.STRICTER; prints the table
if(NOT TARGET statedict_cli)
  return()
endif()
add_executable(st_read_meta ${CMAKE_CURRENT_SOURCE_DIR}/safetensors/st_read_meta.c)
target_link_libraries(st_read_meta PRIVATE statedict PkgConfig::JANSSON)
sdict_torch_test(st_read_interop
  COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/safetensors/read_interop.py
          $<TARGET_FILE:statedict_cli> $<TARGET_FILE:st_read_meta>
          ${CMAKE_CURRENT_BINARY_DIR}/st_read/@GEN@
  GENERATIONS 2.6 2.14 LABELS safetensors PROPERTIES TIMEOUT 300)
sdict_torch_test(st_hostile_verdict
  COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/safetensors/hostile_verdict.py
          $<TARGET_FILE:statedict_cli> ${CMAKE_CURRENT_BINARY_DIR}/st_verdict/@GEN@
  GENERATIONS 2.6 2.14 LABELS safetensors PROPERTIES TIMEOUT 300)
