# Hugging Face model folders and shard indexes (src/hf_folder.c).
#
#   hf_hostile       (label "hostile"; standard library only) index and folder cases that break
#                    each rule: exit 3 from ls, dump, convert and verify, the message naming
#                    the entry; plus valid indexes and folders read in index order
#   hf_<mode>@2.14   tests/hf/check_hf.py against huggingface_hub 1.23 and transformers 5.12
#                    (only torch 2.14's environment has them): see that script's docstring.
#                    hub_st, write_st and tf_st need the safetensors reader and writer.
# tests/hf/hf_save drives sdict_save_folder (IN OUTDIR safetensors|bin MAX_SHARD_BYTES).
add_executable(hf_save ${CMAKE_CURRENT_SOURCE_DIR}/hf/hf_save.c)
target_link_libraries(hf_save PRIVATE statedict)

if(TARGET statedict_cli)
  add_test(NAME hf_hostile COMMAND ${SDICT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/hf/hostile_hf.py
           $<TARGET_FILE:statedict_cli> $<TARGET_FILE:hf_save>
           ${CMAKE_SOURCE_DIR}/examples/data ${CMAKE_CURRENT_BINARY_DIR}/hf/hostile)
  set_tests_properties(hf_hostile PROPERTIES LABELS "hostile;cli" TIMEOUT 300)
  if(SDICT_SANITIZE) # shadow memory distorts RSS: the many-shards case checks time only
    set_tests_properties(hf_hostile PROPERTIES ENVIRONMENT SDICT_SANITIZED=1)
  endif()

  foreach(mode hub_bin hub_st write_bin write_st tf_bin tf_st)
    sdict_torch_test(hf_${mode}
      COMMAND @PYTHON@ ${CMAKE_CURRENT_SOURCE_DIR}/hf/check_hf.py $<TARGET_FILE:statedict_cli>
              $<TARGET_FILE:hf_save> ${CMAKE_CURRENT_BINARY_DIR}/hf/@GEN@/${mode} ${mode}
      GENERATIONS 2.14 LABELS hf PROPERTIES TIMEOUT 600)
  endforeach()
endif()
