# DCP saves and loads from MPI ranks (statedict_mpi, examples/dcp_mpi). Skipped, with CMake's
# message, when MPI was not found.
#
#   dcp_mpi@GEN   tests/dcp/mpi_dcp.py: mpirun on the host saves with 1, 2 and 4 ranks (rows,
#                 columns; uneven, empty and replicated shards; non-tensor values), torch's
#                 dcp_to_torch_save and a 3-rank gloo dcp.load check them (mpi_check.py); MPI
#                 loads of torch's and of its own saves from 1-4 ranks; reads only overlapping
#                 items; a failing rank leaves no .metadata
if(TARGET dcp_mpi AND MPIEXEC_EXECUTABLE)
  sdict_torch_test(dcp_mpi
    COMMAND ${SDICT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/dcp/mpi_dcp.py @PYTHON@
            $<TARGET_FILE:dcp_mpi> ${MPIEXEC_EXECUTABLE} ${CMAKE_CURRENT_BINARY_DIR}/dcp/@GEN@/mpi
    GENERATIONS 2.6 2.14 LABELS "dcp;mpi" PROPERTIES TIMEOUT 600 RESOURCE_LOCK gloo)
endif()
