# Exported-symbol check: only public, prefixed, declared symbols leave the shared libraries.
if(BUILD_SHARED_LIBS)
  set(sdict_export_libs $<TARGET_FILE:statedict>)
  if(TARGET statedict_nn)
    list(APPEND sdict_export_libs $<TARGET_FILE:statedict_nn>)
  endif()
  add_test(NAME exported_symbols
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/symbols/check_exports.sh
                   ${CMAKE_SOURCE_DIR}/include ${sdict_export_libs})
  set_tests_properties(exported_symbols PROPERTIES LABELS unit)
endif()
