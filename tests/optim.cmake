# Interop tests of the training layer against real PyTorch (label "interop"), driven through
# the `train` and `seed_multi_model` examples: N optimizer steps in C equal N steps in torch
# (SGD plain/momentum/nesterov/weight decay/maximize, Adam, AdamW, amsgrad; Adam-family with the
# default eps against a float64 torch run), cross-resume in
# both directions, and multi-model files both ways. Each case is one run of
# tests/optim/optim_interop.py per torch generation (NAME@GEN); it exits 77 (skip) when
# that generation's torch is missing.
# The examples come from examples/CMakeLists-train.cmake.
if(NOT TARGET train)
  message(STATUS "optim interop tests: no train target (examples off), not registered")
  return()
endif()
set(_sdict_optim_cases
  steps_lenet_sgd steps_lenet_sgd_momentum steps_lenet_sgd_nesterov steps_lenet_sgd_wd
  steps_lenet_sgd_maximize steps_lenet_adam steps_lenet_adam_wd steps_lenet_adamw
  steps_lenet_amsgrad steps_lenet_adamw_amsgrad eps8_lenet_adam eps8_lenet_adamw eps8_lenet_amsgrad
  steps_mlp_sgd steps_mlp_sgd_momentum steps_mlp_sgd_nesterov steps_mlp_sgd_wd
  xresume_tc_sgd_momentum xresume_ct_sgd_momentum xresume_tc_adam xresume_ct_adam
  xresume_tc_adamw_amsgrad xresume_ct_adamw_amsgrad)
foreach(c ${_sdict_optim_cases})
  # one BLAS thread: results then do not depend on the machine's core count
  sdict_torch_test(optim_interop_${c}
    COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/optim/optim_interop.py ${c}
            $<TARGET_FILE:train> ${CMAKE_CURRENT_BINARY_DIR}/optim_interop/@GEN@
    PROPERTIES TIMEOUT 600 ENVIRONMENT OPENBLAS_NUM_THREADS=1)
endforeach()
if(TARGET seed_multi_model)
  foreach(c multi_c2t multi_t2c)
    sdict_torch_test(optim_interop_${c}
      COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/optim/optim_interop.py ${c}
              $<TARGET_FILE:seed_multi_model> ${CMAKE_CURRENT_BINARY_DIR}/optim_interop/@GEN@
      PROPERTIES TIMEOUT 600 ENVIRONMENT OPENBLAS_NUM_THREADS=1)
  endforeach()
endif()
if(TARGET seed_print_state_dict)
  sdict_torch_test(optim_interop_print_state_dict
    COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/optim/optim_interop.py print_state_dict
            $<TARGET_FILE:seed_print_state_dict> ${CMAKE_CURRENT_BINARY_DIR}/optim_interop/@GEN@
    PROPERTIES TIMEOUT 600)
endif()
# The recipe examples check themselves: seed_checkpoint fails unless training resumed from the
# file equals training that never left memory; seed_inference fails unless the reloaded model's
# eval output equals the original's (here on the torch-written examples/data/lenet.pt).
if(TARGET seed_checkpoint AND TARGET seed_inference)
  add_test(NAME optim_example_checkpoint
           COMMAND seed_checkpoint --path ${CMAKE_CURRENT_BINARY_DIR}/optim_example_ckpt.tar)
  add_test(NAME optim_example_inference
           COMMAND seed_inference --weights ${CMAKE_SOURCE_DIR}/examples/data/lenet.pt
                   --path ${CMAKE_CURRENT_BINARY_DIR}/optim_example_sd.pt)
  set_tests_properties(optim_example_checkpoint optim_example_inference PROPERTIES
    LABELS unit TIMEOUT 600 ENVIRONMENT OPENBLAS_NUM_THREADS=1)
endif()
