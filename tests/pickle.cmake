# Pickle machine tests: tests/pickle/gen_pickles.py writes CPython pickles (protocols 0-5) and
# their canonical text into the build tree before test_pickle runs (a ctest fixture).
if(TARGET test_pickle)
  set(SDICT_PICKLE_DATA ${CMAKE_CURRENT_BINARY_DIR}/pickle_data)
  add_test(NAME pickle_gen COMMAND ${CMAKE_COMMAND} -E env ${SDICT_PYTHON}
           ${CMAKE_CURRENT_SOURCE_DIR}/pickle/gen_pickles.py ${SDICT_PICKLE_DATA})
  set_tests_properties(pickle_gen PROPERTIES FIXTURES_SETUP pickle_data LABELS unit)
  file(MAKE_DIRECTORY ${SDICT_PICKLE_DATA})
  set_tests_properties(test_pickle PROPERTIES FIXTURES_REQUIRED pickle_data
                       ENVIRONMENT SDICT_PICKLE_DATA=${SDICT_PICKLE_DATA})
endif()
