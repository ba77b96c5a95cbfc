# Loader tests against checkpoints written at test time by real torch (tests/load/gen_torch.py).
# The fixture part of test_load runs as the automatic unit test; this registers the torch part,
# which exits 77 (skipped) when /usr/bin/python3 cannot import torch.
if(TARGET test_load)
  add_test(NAME test_load_torch COMMAND test_load torch)
  set_tests_properties(test_load_torch PROPERTIES LABELS "unit;torch" SKIP_RETURN_CODE 77
                       TIMEOUT 600)
endif()
