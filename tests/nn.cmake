# Interop tests of the nn layer against real PyTorch (label "interop"), driven through the
# `infer` example: eval/train outputs, BatchNorm statistics, C-written state_dicts loading in
# torch with strict=True, load_state_dict error messages equal to torch's, non-strict
# _IncompatibleKeys, --strip-prefix and --skip-size-mismatch, num_batches_tracked wrapping.
# Each case is one run of tests/nn/nn_interop.py per torch generation (NAME@GEN); it exits
# 77 (skip) when that generation's torch is missing.
if(NOT TARGET infer)
  message(STATUS "nn interop tests: no infer target (examples off), not registered")
  return()
endif()
set(_sdict_nn_cases
  eval_lenet eval_resnet18 eval_mlp train_resnet18 train_mlp ckpt_lenet bn_legacy
  err_missing err_unexpected err_shape err_type err_bn err_prefix
  ns_lenet ns_resnet18 ns_prefix skip_shape nbt_wrap)
foreach(c ${_sdict_nn_cases})
  sdict_torch_test(nn_interop_${c}
    COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/nn/nn_interop.py ${c} $<TARGET_FILE:infer>
            ${CMAKE_CURRENT_BINARY_DIR}/nn_interop/@GEN@
    PROPERTIES TIMEOUT 600)
endforeach()
if(TARGET lenet)
  sdict_torch_test(nn_interop_lenet_example
    COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/nn/nn_interop.py lenet_example
            $<TARGET_FILE:lenet> ${CMAKE_CURRENT_BINARY_DIR}/nn_interop/@GEN@
    PROPERTIES TIMEOUT 600)
endif()
