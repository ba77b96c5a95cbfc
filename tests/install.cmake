# What a user of an installed statedict does (label "cli"): `cmake --install` into a scratch
# prefix, then build README's library quick-start against it with pkg-config and with CMake's
# find_package (statedict::statedict, statedict::statedict_nn and, when built,
# statedict::statedict_mpi), run it and check its output and the file it saves.
if(NOT BUILD_SHARED_LIBS OR SDICT_BUILD_FUZZERS OR NOT TARGET statedict_cli OR NOT TARGET statedict_nn)
  return()
endif()
if(TARGET statedict_mpi)
  set(SDICT_INSTALL_TEST_MPI 1)
else()
  set(SDICT_INSTALL_TEST_MPI 0)
endif()
add_test(NAME install_consumer COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/install/consumer.sh
         ${CMAKE_BINARY_DIR} ${CMAKE_SOURCE_DIR} ${CMAKE_CURRENT_BINARY_DIR}/install
         ${CMAKE_C_COMPILER} ${SDICT_INSTALL_TEST_MPI} "${SDICT_SANITIZE}")
set_tests_properties(install_consumer PROPERTIES LABELS cli TIMEOUT 300)
