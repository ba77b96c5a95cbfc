# nn.MultiheadAttention, nn.TransformerEncoderLayer and nn.TransformerDecoderLayer
# (src/nn/attention.c) against real torch: tests/mha/mha_interop.py saves each module's
# state_dict and inputs (masks bool and float, both batch_first values, norm_first both ways,
# relu and gelu), runs tests/mha/mha_run.c on them and compares the eval outputs and attention
# weights with torch's (1e-5 relative); then the layers in training mode (dropout 0), whose
# input and parameter gradients must match torch's autograd (1e-4 relative). One run per torch
# generation; exit 77 without torch.
add_executable(mha_run ${CMAKE_CURRENT_SOURCE_DIR}/mha/mha_run.c)
target_link_libraries(mha_run PRIVATE statedict_nn statedict)
sdict_torch_test(mha_interop
  COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/mha/mha_interop.py $<TARGET_FILE:mha_run>
          ${CMAKE_CURRENT_BINARY_DIR}/mha/@GEN@
  GENERATIONS 1.13 2.14 LABELS mha PROPERTIES TIMEOUT 300 ENVIRONMENT OPENBLAS_NUM_THREADS=1)

# examples/infer --arch transformer (nn.TransformerEncoder stacks and a single
# TransformerEncoderLayer, eval) against torch within 1e-5 relative, and its shape-option
# errors naming the key: tests/mha/transformer_infer.py. About 4 s per generation.
if(TARGET infer)
  sdict_torch_test(transformer_infer
    COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/mha/transformer_infer.py $<TARGET_FILE:infer>
            ${CMAKE_CURRENT_BINARY_DIR}/transformer_infer/@GEN@
    GENERATIONS 1.13 2.14 LABELS mha PROPERTIES TIMEOUT 120 ENVIRONMENT OPENBLAS_NUM_THREADS=1)
endif()
