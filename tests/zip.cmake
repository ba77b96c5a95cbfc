# Zip container: byte identity of our writer against files written by real torch 1.13.
# Skipped (77) when SDICT_PYTHON cannot import torch.
if(TARGET test_zip)
  add_test(NAME zip_torch_identity
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/zip/run_identity.sh ${SDICT_PYTHON}
                   ${CMAKE_CURRENT_SOURCE_DIR}/zip/gen_torch.py $<TARGET_FILE:test_zip>
                   ${CMAKE_CURRENT_BINARY_DIR}/zip_identity)
  set_tests_properties(zip_torch_identity PROPERTIES LABELS interop SKIP_RETURN_CODE 77
                       TIMEOUT 300)
endif()

# Zip differentials (issue 11): ambiguous archives torch reads differently are refused by ls,
# scan and verify; torch.load itself shows which cases are real differentials.
if(TARGET statedict_cli)
  sdict_torch_test(zip_differential
    COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/zip/differential.py $<TARGET_FILE:statedict_cli>
    GENERATIONS 1.13 2.14
    PROPERTIES TIMEOUT 600)
  # Files torch 2.6+ writes with set_crc32_options(False): verify says "no CRC recorded".
  sdict_torch_test(zip_no_crc
    COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/zip/no_crc.py $<TARGET_FILE:statedict_cli>
    GENERATIONS 2.6 2.14
    PROPERTIES TIMEOUT 300)
endif()
