# Writer tests against several torch generations (label "save2x"): torch 1.13 (the host's
# Debian python3-torch), 2.6 and 2.14 (chroots made by scripts/torchenv). Each test runs its
# script through tests/save2x/run.sh, which prints the torch version used and skips (77) when
# that generation is not available.
#
#   save2x_identical_2.14        torch 2.14 writes state_dicts (LeNet, resnet18, BatchNorm), an
#                                AdamW general checkpoint, optimizer states, Python types; the
#                                driver re-saves each with the 2.x layout: byte-identical
#                                (tests/save/identical.py --torch2)
#   save2x_content_2.6           the same files from torch 2.6, re-saved with the 2.x layout,
#                                load with 2.6's default torch.load with equal content (2.6's
#                                own layout differs: bytes are reported only)
#   save2x_torch_load_<gen>      C-built trees of everything a checkpoint holds, in both
#                                layouts, load with the generation's default torch.load
#   save2x_numpy_<gen>           numpy scalars and arrays torch.save wrote stay numpy through
#                                `statedict convert --not-weights-only` (and are refused without)
#   save2x_from_scratch_<gen>    state_dicts the nn layer builds in C (infer --save-state) are
#                                byte-identical to torch.save's in the generation's layout
set(SDICT_SAVE2X_RUN ${CMAKE_CURRENT_SOURCE_DIR}/save2x/run.sh)
set(SDICT_SAVE2X_DIR ${CMAKE_CURRENT_BINARY_DIR}/save2x)

add_test(NAME save2x_identical_2.14
         COMMAND ${SDICT_SAVE2X_RUN} 2.14 ${CMAKE_CURRENT_SOURCE_DIR}/save/identical.py --torch2
                 $<TARGET_FILE:sdict_resave> ${SDICT_SAVE2X_DIR}/identical_2.14)
add_test(NAME save2x_content_2.6
         COMMAND ${SDICT_SAVE2X_RUN} 2.6 ${CMAKE_CURRENT_SOURCE_DIR}/save/identical.py --torch2
                 --content-only $<TARGET_FILE:sdict_resave> ${SDICT_SAVE2X_DIR}/content_2.6)
set(_sdict_save2x_tests save2x_identical_2.14 save2x_content_2.6)
foreach(gen 1.13 2.6 2.14)
  add_test(NAME save2x_torch_load_${gen}
           COMMAND ${SDICT_SAVE2X_RUN} ${gen} ${CMAKE_CURRENT_SOURCE_DIR}/save2x/check_built2.py
                   $<TARGET_FILE:sdict_resave> ${SDICT_SAVE2X_DIR}/torch_load_${gen})
  list(APPEND _sdict_save2x_tests save2x_torch_load_${gen})
  if(TARGET statedict_cli)
    add_test(NAME save2x_numpy_${gen}
             COMMAND ${SDICT_SAVE2X_RUN} ${gen} ${CMAKE_CURRENT_SOURCE_DIR}/save2x/numpy_kept.py
                     $<TARGET_FILE:statedict_cli> ${SDICT_SAVE2X_DIR}/numpy_${gen})
    list(APPEND _sdict_save2x_tests save2x_numpy_${gen})
  endif()
endforeach()
if(TARGET infer)
  foreach(gen 1.13 2.14)
    add_test(NAME save2x_from_scratch_${gen}
             COMMAND ${SDICT_SAVE2X_RUN} ${gen} ${CMAKE_CURRENT_SOURCE_DIR}/save2x/from_scratch.py
                     $<TARGET_FILE:infer> ${SDICT_SAVE2X_DIR}/from_scratch_${gen})
    list(APPEND _sdict_save2x_tests save2x_from_scratch_${gen})
  endforeach()
endif()
set_tests_properties(${_sdict_save2x_tests} PROPERTIES
  LABELS "save2x;interop" SKIP_RETURN_CODE 77 TIMEOUT 900)
