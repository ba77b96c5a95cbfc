#!/bin/sh
# consumer.sh BUILD_DIR SOURCE_DIR WORK_DIR CC WITH_MPI [SANITIZE]
# Installs BUILD_DIR into WORK_DIR/prefix and builds the README's library quick-start against the
# installed files, once with pkg-config and once through find_package(statedict), linking each
# of the package's targets; every program must print the lenet conv1.weight line and save a
# copy.pt that `statedict diff` (the installed one) finds equal to the original.
set -eu
build=$1 src=$2 work=$3 cc=$4 with_mpi=$5 sanitize=${6:-}
rm -rf "$work"
mkdir -p "$work/run/examples/data"
prefix=$work/prefix
fail() { echo "FAIL: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$prefix" >"$work/install.log" 2>&1 ||
  { cat "$work/install.log" >&2; fail "cmake --install"; }
[ -x "$prefix/bin/statedict" ] || fail "no $prefix/bin/statedict"

# The README's first C block after "## The library" is the quick-start program.
awk '/^## The library/ { lib = 1 } lib && /^```c$/ { on = 1; next } on && /^```$/ { exit } on' \
  "$src/README.md" >"$work/quickstart.c"
grep -q 'sdict_load' "$work/quickstart.c" || fail "no quick-start program found in README.md"
cp "$src/examples/data/lenet.pt" "$work/run/examples/data/lenet.pt"

flags="-std=c11 -Wall -Wextra -Wpedantic -Werror"
[ -n "$sanitize" ] && flags="$flags -fsanitize=$sanitize"

check_run() { # PROGRAM: run from a folder shaped like the repository's root
  rm -f "$work/run/copy.pt"
  out=$(cd "$work/run" && "$1") || fail "$1 exited $?"
  [ "$out" = "float32 [6, 3, 5, 5]" ] || fail "$1 printed '$out'"
  d=$("$prefix/bin/statedict" diff --rtol 0 --atol 0 "$work/run/examples/data/lenet.pt" \
      "$work/run/copy.pt") || fail "copy.pt of $1 differs: $d"
  [ "$d" = "no differences" ] || fail "statedict diff printed '$d'"
  echo "ok: $1"
}

# pkg-config, with the rpath the README asks for outside the default library path
for pc in statedict statedict_nn; do
  # shellcheck disable=SC2046
  "$cc" $flags -o "$work/qs_pc_$pc" "$work/quickstart.c" \
    $(PKG_CONFIG_PATH="$prefix/lib/pkgconfig" pkg-config --cflags --libs $pc) \
    -Wl,-rpath,"$prefix/lib" || fail "pkg-config build against $pc"
  check_run "$work/qs_pc_$pc"
done

# CMake's find_package
mkdir -p "$work/cmake"
cp "$work/quickstart.c" "$work/cmake/quickstart.c"
{
  echo 'cmake_minimum_required(VERSION 3.16)'
  echo 'project(quickstart C)'
  echo 'find_package(statedict REQUIRED)'
  echo 'add_executable(qs_statedict quickstart.c)'
  echo 'target_link_libraries(qs_statedict PRIVATE statedict::statedict)'
  echo 'add_executable(qs_statedict_nn quickstart.c)'
  echo 'target_link_libraries(qs_statedict_nn PRIVATE statedict::statedict_nn)'
  if [ "$with_mpi" = 1 ]; then
    echo 'add_executable(qs_statedict_mpi quickstart.c)'
    echo 'target_link_libraries(qs_statedict_mpi PRIVATE statedict::statedict_mpi)'
  fi
} >"$work/cmake/CMakeLists.txt"
cmake -S "$work/cmake" -B "$work/cmake/build" -DCMAKE_C_COMPILER="$cc" \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_C_FLAGS="$flags" >"$work/cmake.log" 2>&1 ||
  { cat "$work/cmake.log" >&2; fail "configuring a find_package(statedict) project"; }
cmake --build "$work/cmake/build" >"$work/cmake-build.log" 2>&1 ||
  { cat "$work/cmake-build.log" >&2; fail "building a find_package(statedict) project"; }
check_run "$work/cmake/build/qs_statedict"
check_run "$work/cmake/build/qs_statedict_nn"
if [ "$with_mpi" = 1 ]; then check_run "$work/cmake/build/qs_statedict_mpi"; fi
echo "install_consumer: all ok"
