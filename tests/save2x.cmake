# Writer tests against several torch generations (labels "save2x", "interop", "torchGEN"),
# registered with sdict_torch_test (tests/CMakeLists.txt) as NAME@GEN:
#
#   save2x_identical@2.14        torch 2.14 writes state_dicts (LeNet, resnet18, BatchNorm), an
#                                AdamW general checkpoint, optimizer states, Python types; the
#                                driver re-saves each with the 2.x layout: byte-identical
#                                (tests/save/identical.py --torch2)
#   save2x_content@2.6           the same files from torch 2.6, re-saved with the 2.x layout,
#                                load with 2.6's default torch.load with equal content (2.6's
#                                own layout differs: bytes are reported only)
#   save2x_torch_load@GEN        C-built trees of everything a checkpoint holds, in both
#                                layouts, load with the generation's default torch.load
#   save2x_numpy@GEN             numpy scalars and arrays torch.save wrote stay numpy through
#                                `statedict convert --not-weights-only` (and are refused without)
#   save2x_from_scratch@GEN      state_dicts the nn layer builds in C (infer --save-state) are
#                                byte-identical to torch.save's in the generation's layout
set(SDICT_SAVE2X_DIR ${CMAKE_CURRENT_BINARY_DIR}/save2x)
set(_sdict_s2 ${CMAKE_CURRENT_SOURCE_DIR}/save2x)

sdict_torch_test(save2x_identical GENERATIONS 2.14 LABELS save2x
  COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/save/identical.py --torch2
          $<TARGET_FILE:sdict_resave> ${SDICT_SAVE2X_DIR}/identical_@GEN@
  PROPERTIES TIMEOUT 900)
sdict_torch_test(save2x_content GENERATIONS 2.6 LABELS save2x
  COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/save/identical.py --torch2 --content-only
          $<TARGET_FILE:sdict_resave> ${SDICT_SAVE2X_DIR}/content_@GEN@
  PROPERTIES TIMEOUT 900)
sdict_torch_test(save2x_torch_load LABELS save2x
  COMMAND @PYTHON@ ${_sdict_s2}/check_built2.py $<TARGET_FILE:sdict_resave>
          ${SDICT_SAVE2X_DIR}/torch_load_@GEN@
  PROPERTIES TIMEOUT 900)
if(TARGET statedict_cli)
  sdict_torch_test(save2x_numpy LABELS save2x
    COMMAND @PYTHON@ ${_sdict_s2}/numpy_kept.py $<TARGET_FILE:statedict_cli>
            ${SDICT_SAVE2X_DIR}/numpy_@GEN@
    PROPERTIES TIMEOUT 900)
endif()
if(TARGET infer)
  sdict_torch_test(save2x_from_scratch GENERATIONS 1.13 2.14 LABELS save2x
    COMMAND @PYTHON@ ${_sdict_s2}/from_scratch.py $<TARGET_FILE:infer>
            ${SDICT_SAVE2X_DIR}/from_scratch_@GEN@
    PROPERTIES TIMEOUT 900)
endif()
