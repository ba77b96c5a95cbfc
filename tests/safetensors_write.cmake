# safetensors writer tests against the real safetensors package (labels "safetensors",
# "interop", "torchGEN"; torch 1.13's environment has no safetensors), registered with
# sdict_torch_test (tests/CMakeLists.txt) as NAME@GEN. The writer's rules on C-built trees are
# the unit test test_safetensors_write.
#
#   st_write_bytes@GEN      `statedict convert x.pt x.safetensors` equals save_file's bytes for
#                           every dtype this safetensors writes (0.8: all of torch 2.14's it
#                           maps; 0.4.5: its subset), views, 0-dim, empty, escaped names; tied
#                           weights keep _remove_duplicate_names's name
#   st_write_load@GEN       the files load with load_file, safe_open and load (bit-identical)
#   st_write_roundtrip@GEN  .pt -> .safetensors -> .pt -> .safetensors with statedict (needs
#                           the safetensors reader; skips without it)
#   st_write_cli@GEN        every convert option, and CRC-corrupt input refused unless
#                           --no-verify
set(_sdict_stw ${CMAKE_CURRENT_SOURCE_DIR}/safetensors/write_interop.py)
foreach(mode bytes load roundtrip cli)
  sdict_torch_test(st_write_${mode} GENERATIONS 2.6 2.14 LABELS safetensors
    COMMAND @PYTHON@ ${_sdict_stw} ${mode} $<TARGET_FILE:statedict_cli>
            ${CMAKE_CURRENT_BINARY_DIR}/st_write/${mode}_@GEN@
    PROPERTIES TIMEOUT 300)
endforeach()
