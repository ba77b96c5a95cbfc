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
