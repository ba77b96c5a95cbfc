# GPT-2 (src/nn/gpt2.c) against transformers 5.12's GPT2LMHeadModel, driven through the
# `infer --arch gpt2` and `generate` examples: tests/gpt2/gpt2_interop.py (see its docstring).
#   gpt2_logits@2.14    cases logits + activation + layers (eval logits of every folder layout,
#                       configs; each transformer layer's forward against torch's module)
#   gpt2_generate@2.14  cases generate + errors (greedy and top-k generation, refusals)
# Two cases per run share the cost of importing transformers. Only torch 2.14's environment
# has transformers.
if(NOT TARGET infer OR NOT TARGET generate)
  return()
endif()
# tests/gpt2/layer_run: one layer (LayerNorm, GELU, Softmax, LogSoftmax, Conv1D) on a file
add_executable(layer_run ${CMAKE_CURRENT_SOURCE_DIR}/gpt2/layer_run.c)
target_link_libraries(layer_run PRIVATE statedict_nn statedict)
foreach(t "logits;logits+activation+layers" "generate;generate+errors")
  list(GET t 0 name)
  list(GET t 1 cases)
  sdict_torch_test(gpt2_${name}
    COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/gpt2/gpt2_interop.py ${cases}
            $<TARGET_FILE:infer> $<TARGET_FILE:generate> $<TARGET_FILE:layer_run>
            ${CMAKE_CURRENT_BINARY_DIR}/gpt2/@GEN@/${name}
    GENERATIONS 2.14 LABELS gpt2 PROPERTIES TIMEOUT 600)
endforeach()
# gpt2_train@2.14: train --arch gpt2 against transformers' GPT2LMHeadModel trained by torch:
# 20 AdamW steps, checkpoints resumed across C and torch both ways, eval loss, dropout
# (tests/gpt2/gpt2_train.py, one torch process).
if(TARGET train)
  sdict_torch_test(gpt2_train
    COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/gpt2/gpt2_train.py $<TARGET_FILE:train>
            ${CMAKE_SOURCE_DIR}/examples/data/gettysburg.txt
            ${CMAKE_CURRENT_BINARY_DIR}/gpt2/@GEN@/train
    GENERATIONS 2.14 LABELS gpt2 PROPERTIES TIMEOUT 300)
endif()
