# Training examples (issue 7): included from examples/CMakeLists.txt. Public headers only.
if(TARGET statedict_nn)
  foreach(prog train seed_print_state_dict seed_inference seed_checkpoint seed_multi_model)
    if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/${prog}.c)
      add_executable(${prog} ${CMAKE_CURRENT_LIST_DIR}/${prog}.c)
      target_link_libraries(${prog} PRIVATE statedict_nn statedict)
    endif()
  endforeach()
endif()
