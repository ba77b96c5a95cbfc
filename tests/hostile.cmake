# Hostile corpus (issue 4): generated at test time by a committed script (standard library only),
# then refused by the library (test_hostile) and by the CLI (exit 3).
set(SDICT_HOSTILE_DIR ${CMAKE_CURRENT_BINARY_DIR}/hostile)
add_test(NAME hostile_generate
         COMMAND ${SDICT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/hostile/gen_hostile.py
                 ${SDICT_HOSTILE_DIR} ${SDICT_HOSTILE_DIR}/PWNED)
set_tests_properties(hostile_generate PROPERTIES FIXTURES_SETUP hostile LABELS hostile)
set_tests_properties(test_hostile PROPERTIES FIXTURES_REQUIRED hostile LABELS "unit;hostile")
if(TARGET statedict_cli)
  if(SDICT_SANITIZE)
    set(vmem_kb 0)        # sanitizers need their shadow memory; the release build checks the bound
  else()
    set(vmem_kb 2000000)  # 2 GB of address space
  endif()
  add_test(NAME cli_hostile COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/hostile/cli_hostile.sh
           $<TARGET_FILE:statedict_cli> ${SDICT_HOSTILE_DIR} ${vmem_kb})
  set_tests_properties(cli_hostile PROPERTIES FIXTURES_REQUIRED hostile LABELS "cli;hostile" TIMEOUT 1200)
  # the same corpus read with --inert (objects are data): listed or refused, nothing runs
  add_test(NAME cli_hostile_inert COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/hostile/cli_hostile.sh
           $<TARGET_FILE:statedict_cli> ${SDICT_HOSTILE_DIR} ${vmem_kb} inert)
  set_tests_properties(cli_hostile_inert PROPERTIES FIXTURES_REQUIRED hostile LABELS "cli;hostile"
                       TIMEOUT 1200)
endif()
# Budget (issue 11): every command on each budget case within 64 x file size + 64 MB of peak RSS
# and 1 s per MB + 2 s; sanitizer builds check time (5x, for an unoptimised instrumented build)
# and crashes only (shadow memory distorts RSS).
if(TARGET statedict_cli)
  if(SDICT_SANITIZE)
    set(budget_flags --time-only --time-factor=5)  # unoptimised + instrumented: ~3-5x slower
  else()
    set(budget_flags)
  endif()
  add_test(NAME cli_budget COMMAND ${SDICT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/hostile/budget.py
           $<TARGET_FILE:statedict_cli> ${SDICT_HOSTILE_DIR} ${budget_flags})
  set_tests_properties(cli_budget PROPERTIES FIXTURES_REQUIRED hostile LABELS "cli;hostile" TIMEOUT 1200)
  add_test(NAME cli_sigbus COMMAND ${SDICT_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/hostile/sigbus.py
           $<TARGET_FILE:statedict_cli>)
  set_tests_properties(cli_sigbus PROPERTIES LABELS "cli;hostile" TIMEOUT 300)
endif()
