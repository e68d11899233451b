# Shared by tools/test.sh and tools/demo.sh: find the repository, say what we
# do, install the Debian packages a3fta needs (only the missing ones), build.

A3FTA_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Build and test dependencies, one list (Debian 12 package names).
A3FTA_DEBIAN_PACKAGES=(
  build-essential cmake pkg-config git clang-format
  libopenmpi-dev openmpi-bin libhdf5-openmpi-dev hdf5-tools
  libyaml-dev libopenblas-dev libdnnl-dev libcjson-dev zlib1g-dev libpng-dev
  dataset-fashion-mnist python3 python3-numpy python3-h5py python3-torch python3-matplotlib chromium
  python3-sklearn
  slurm-wlm munge libpmix-dev
)

step() { printf '\n== %s (at %d s)\n' "$*" "$SECONDS" >&2; } # CI's time, by phase

# Installs what is missing; silent when everything is there.
ensure_debian_packages() {
  local missing=() p
  for p in "${A3FTA_DEBIAN_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  step "installing missing Debian packages: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" = 0 ] || sudo=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# mpirun as root needs explicit consent; CI and containers run as root.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

# OpenBLAS's kernel set for this CPU, by the rules of src/backend/cpu/blas_setup.c
# (best_coretype), from /proc/cpuinfo; empty when none applies.
best_openblas_coretype() {
  local flags
  flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
  has() { local f; for f in "$@"; do [[ $flags == *" $f "* ]] || return 1; done; }
  if has avx512f avx512bw avx512dq avx512vl; then
    if has avx512_bf16; then echo Cooperlake; else echo SkylakeX; fi
  elif has avx2 fma; then
    echo Haswell
  fi
}

# Every process then starts on the kernels a3fta would pick, so none switches
# OpenBLAS's kernel table at run time (see blas_setup.c).
coretype=$(best_openblas_coretype)
[ -n "$coretype" ] && export OPENBLAS_CORETYPE=$coretype
unset coretype

# configure_and_build BUILD_DIR [cmake options...] [-- targets...]
# (every target when none is named)
configure_and_build() {
  local dir=$1 opts=() targets=()
  shift
  while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
  if [ $# -gt 0 ]; then shift; targets=(--target "$@"); fi
  step "configure $dir (${opts[*]})"
  cmake -S "$A3FTA_ROOT" -B "$dir" "${opts[@]}" >"$dir.configure.log" 2>&1 || {
    cat "$dir.configure.log" >&2; return 1; }
  step "build $dir"
  cmake --build "$dir" -j"$(nproc)" "${targets[@]}" >"$dir.build.log" 2>&1 || {
    grep -E -B2 -A6 'error|Error' "$dir.build.log" | head -80 >&2; return 1; }
}
