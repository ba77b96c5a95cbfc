# Save tests against real PyTorch (label "save"). tests/save/sdict_resave is a small driver that
# re-saves a loaded file or writes a C-built tree; the python scripts make torch write the
# reference files and load ours. They skip (exit 77) when ${SDICT_PYTHON} cannot import torch.
#
#   save_identical   torch 1.13 writes LeNet, resnet18 and a BatchNorm model's state_dicts, an
#                    AdamW checkpoint and Python types (and other checkpoints / optimizer
#                    states, reported only); the driver loads and re-saves each under the same
#                    file name; those must be byte-identical (save2x.cmake runs the same script
#                    with torch 2.14 and the 2.x layout)
#   save_torch_load@GEN  C-built trees (every dtype, 0-dim, empty, views, tied weights, nested
#                    checkpoint values) loaded by torch.load and checked element by element,
#                    in every torch generation
add_executable(sdict_resave ${CMAKE_CURRENT_SOURCE_DIR}/save/sdict_resave.c)
target_link_libraries(sdict_resave PRIVATE statedict_internal m)

add_test(NAME save_identical
         COMMAND ${SDICT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/save/identical.py
                 $<TARGET_FILE:sdict_resave> ${CMAKE_CURRENT_BINARY_DIR}/save_identical)
set_tests_properties(save_identical PROPERTIES
  LABELS "save;interop" SKIP_RETURN_CODE 77 TIMEOUT 600)
sdict_torch_test(save_torch_load LABELS save
  COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/save/check_built.py $<TARGET_FILE:sdict_resave>
          ${CMAKE_CURRENT_BINARY_DIR}/save_torch_load/@GEN@
  PROPERTIES TIMEOUT 600)
