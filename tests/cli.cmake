# CLI tests (label "cli"): tests/cli/usage.sh needs nothing but the tool; the others generate
# small checkpoints with real PyTorch (tests/cli/gen_cli.py, once per ctest run) and check each
# subcommand against values torch computes from the same files (tests/cli/check_cli.py). They
# skip (77) when ${SDICT_PYTHON} cannot import torch.
if(NOT TARGET statedict_cli)
  return()
endif()
set(SDICT_CLI_TEST_DIR ${CMAKE_CURRENT_BINARY_DIR}/cli)

add_test(NAME cli_usage COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli/usage.sh
         $<TARGET_FILE:statedict_cli> ${SDICT_CLI_TEST_DIR}/usage)
set_tests_properties(cli_usage PROPERTIES LABELS cli TIMEOUT 120)

add_test(NAME cli_generate COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli/run_gen.sh
         ${SDICT_PYTHON} ${SDICT_CLI_TEST_DIR}/files)
set_tests_properties(cli_generate PROPERTIES
  LABELS cli FIXTURES_SETUP sdict_cli_files SKIP_RETURN_CODE 77 TIMEOUT 300)

foreach(sub ls dump show diff convert verify scan)
  add_test(NAME cli_${sub} COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli/run.sh
           ${SDICT_PYTHON} $<TARGET_FILE:statedict_cli> ${SDICT_CLI_TEST_DIR}/files ${sub})
  set_tests_properties(cli_${sub} PROPERTIES
    LABELS cli FIXTURES_REQUIRED sdict_cli_files SKIP_RETURN_CODE 77 TIMEOUT 300)
endforeach()

add_test(NAME cli_bigendian COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli/bigendian.sh
         $<TARGET_FILE:statedict_cli> ${SDICT_SHARED_FIXTURES})
set_tests_properties(cli_bigendian PROPERTIES LABELS cli SKIP_RETURN_CODE 77 TIMEOUT 120)

# Keys, values, global names and record names holding terminal escapes, BEL, C1 controls, lone
# surrogates and bytes that are not UTF-8 (written by the script itself, standard library
# only): every command's stdout and stderr stay free of control bytes, dump --json keeps the
# exact strs, convert keeps them.
add_test(NAME cli_escape COMMAND ${SDICT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/cli/check_escape.py
         $<TARGET_FILE:statedict_cli> ${SDICT_CLI_TEST_DIR}/escape)
set_tests_properties(cli_escape PROPERTIES LABELS cli TIMEOUT 300)

# convert's save rules against real torch: a read-only target refused and kept, a 255-byte
# name, a dangling symbolic link and a link to a file written through.
add_test(NAME cli_save_rules COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cli/save_rules.sh
         $<TARGET_FILE:statedict_cli> ${SDICT_PYTHON} ${SDICT_CLI_TEST_DIR}/save_rules)
set_tests_properties(cli_save_rules PROPERTIES LABELS cli SKIP_RETURN_CODE 77 TIMEOUT 300)

# The JSON schema of ls --json and dump --json (README): every output over the CLI corpus (and
# ls of all of it at once) validated by a standard-library checker, which first checks that it
# refuses each way of breaking the schema.
add_test(NAME cli_schema COMMAND ${SDICT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/cli/check_schema.py
         $<TARGET_FILE:statedict_cli> ${SDICT_CLI_TEST_DIR}/files)
set_tests_properties(cli_schema PROPERTIES
  LABELS cli FIXTURES_REQUIRED sdict_cli_files SKIP_RETURN_CODE 77 TIMEOUT 300)

# The commands over safetensors files and model folders (hand-written by the script): metadata
# in ls, dump and show --metadata, diff across formats, several formats in one ls. Parts the
# library cannot read yet skip, saying so (77 when all do).
add_test(NAME cli_formats COMMAND ${SDICT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/cli/check_formats.py
         $<TARGET_FILE:statedict_cli> ${SDICT_CLI_TEST_DIR}/formats)
set_tests_properties(cli_formats PROPERTIES LABELS cli SKIP_RETURN_CODE 77 TIMEOUT 300)
