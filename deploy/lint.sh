#!/usr/bin/env bash
# clang-format (check only) and clang-tidy over the project's C++ and BPF C.
#   deploy/lint.sh [build-dir]     # the build dir provides compile_commands.json
#   deploy/lint.sh --format-only
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t cxx < <(git ls-files '*.cc' '*.h' | grep -v '^bpf/')
mapfile -t bpf < <(git ls-files 'bpf/*.c' 'bpf/*.h')

echo "clang-format: ${#cxx[@]} C++ files, ${#bpf[@]} BPF files"
clang-format --dry-run -Werror "${cxx[@]}" "${bpf[@]}"
[[ ${1:-} == --format-only ]] && exit 0

BUILD=${1:-build}
if [[ ! -f $BUILD/compile_commands.json ]]; then
  echo "lint.sh: $BUILD/compile_commands.json missing: configure first (deploy/build.sh $BUILD)" >&2
  exit 1
fi
mapfile -t sources < <(git ls-files '*.cc')
echo "clang-tidy: ${#sources[@]} translation units"
# Generated protobuf headers are not ours: the header filter in .clang-tidy skips them.
printf '%s\n' "${sources[@]}" | xargs -P "$(nproc)" -n 4 clang-tidy -p "$BUILD" --quiet 2>&1 |
  grep -v -E '^[0-9]+ warnings? generated|^Suppressed|^Use -header-filter|^$' || true
# Fail when any diagnostic was printed (WarningsAsErrors makes them errors).
if printf '%s\n' "${sources[@]}" | xargs -P "$(nproc)" -n 4 clang-tidy -p "$BUILD" --quiet >/dev/null 2>&1; then
  echo "clang-tidy: clean"
else
  echo "clang-tidy: findings above" >&2
  exit 1
fi
