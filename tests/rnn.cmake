# Interop tests of LSTM and GRU against real PyTorch (label "interop"): tests/rnn/rnn_torch.py
# saves a torch nn.LSTM / nn.GRU state_dict and inputs for each combination of 1 or 2 layers,
# one or two directions, batch_first, bias and initial states; the driver tests/rnn/rnn_run.c
# runs statedict's module on them (eval forward, then a training forward and
# backpropagation through time) and the script compares output, h_n, c_n and the gradients of
# the input, the initial states and every weight with torch's autograd. The infer case runs
# examples/infer --arch lstm|gru and its shape errors (and resnet18 --num-classes); seqloss
# checks sdict_cross_entropy_loss_ex on [N, C, L] and [N*L, C] logits with ignore_index, and
# Conv1d, Sigmoid, Tanh, SiLU outputs and gradients.
# One run per torch generation (NAME@GEN); exit 77 (skip) when that generation's torch is
# missing.
add_executable(rnn_run ${CMAKE_CURRENT_SOURCE_DIR}/rnn/rnn_run.c)
target_link_libraries(rnn_run PRIVATE statedict_nn statedict m)
set(_sdict_rnn_infer "")
if(TARGET infer)
  set(_sdict_rnn_infer $<TARGET_FILE:infer>)
endif()
foreach(c lstm gru infer seqloss)
  if(c STREQUAL "infer" AND NOT TARGET infer)
    continue()
  endif()
  sdict_torch_test(rnn_torch_${c}
    COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/rnn/rnn_torch.py ${c} $<TARGET_FILE:rnn_run>
            ${CMAKE_CURRENT_BINARY_DIR}/rnn_torch/@GEN@ ${_sdict_rnn_infer}
    PROPERTIES TIMEOUT 300 ENVIRONMENT OPENBLAS_NUM_THREADS=1)
endforeach()
