#!/usr/bin/env bash
# Packs prebuilt GPU binaries with the shared libraries a bare CUDA machine
# lacks (Open MPI with its plugins, parallel HDF5, oneDNN, OpenBLAS, libyaml,
# ...) into .gpu-bundle/bundle.tar.xz, for GPU machines where a3fta's build
# dependencies are not installed. CUDA's own libraries (cuBLAS, NCCL) stay
# behind: the GPU machine has its own, found by tests/gpu/unbundle.sh.
#   tests/gpu/bundle.sh [BUILD_DIR]     (default build-gpu; build it first)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$root/build-gpu}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/bin/tests" "$stage/lib" "$stage/configs"

bins=("$build/a3fta")
while IFS= read -r f; do bins+=("$f"); done < <(find "$build/tests/gpu" -maxdepth 1 -type f -name 'test_*' -perm -u+x)
bins+=("$build/tests/model/test_unet_golden") # its --cuda mode (the PyTorch golden file on the GPU)
cp "$build/a3fta" "$stage/bin/"
for b in "${bins[@]:1}"; do cp "$b" "$stage/bin/tests/"; done
if [[ -x $build/tools/bench/a3fta_bench_step ]]; then # tools/bench/run_step_gpu.sh --bin
  mkdir -p "$stage/bin/tools/bench"
  cp "$build/tools/bench/a3fta_bench_step" "$stage/bin/tools/bench/"
  bins+=("$build/tools/bench/a3fta_bench_step")
fi

# Libraries every Linux has (glibc) or that must come from the GPU machine's
# driver and toolkit are left out.
skip='linux-vdso|ld-linux|/libc\.so|/libm\.so|/libpthread|/libdl\.so|/librt\.so|libcuda\.so|libcublas|libnccl|libnvidia'
ompi=/usr/lib/x86_64-linux-gnu/openmpi
pmix=/usr/lib/x86_64-linux-gnu/pmix2
plugins=$(find "$ompi/lib/openmpi3" "$pmix/lib/pmix" -name '*.so' 2>/dev/null || true)
# shellcheck disable=SC2086
ldd "${bins[@]}" $plugins 2>/dev/null | awk '/=> \//{print $3}' | sort -u | grep -Ev "$skip" |
  while IFS= read -r lib; do cp -L "$lib" "$stage/lib/"; done
mkdir -p "$stage/openmpi" "$stage/pmix"
cp -a "$ompi/lib" "$stage/openmpi/"
cp -a "$pmix/lib" "$stage/pmix/"
cp -a /usr/share/openmpi "$stage/openmpi/share" 2>/dev/null || true
cp "$root"/configs/*.yaml "$stage/configs/"
# configs/weights (the pretrained base) travels with the working tree.
# Static archives and libtool files are for linking, which never happens there.
find "$stage" \( -name '*.a' -o -name '*.la' \) -delete
mkdir -p "$root/.gpu-bundle"
XZ_OPT=-T0 tar -C "$stage" -cJf "$root/.gpu-bundle/bundle.tar.xz" .
du -h "$root/.gpu-bundle/bundle.tar.xz"

# The checks' data: a subset of data/fashion-mnist.h5 (the first 20000 train
# and 2000 test images, every class present) beside the bundle, since the
# whole file with the bundle and the tree is over the device's 64 MiB.
# tests/gpu/unbundle.sh puts it at data/fashion-mnist.h5 when that is missing.
if [[ -s $root/data/fashion-mnist.h5 ]]; then
  /usr/bin/python3 - "$root/data/fashion-mnist.h5" "$root/.gpu-bundle/fashion-mnist.h5" <<'PY'
import sys, h5py
src, dst = sys.argv[1:]
keep = {"train": 20000, "test": 2000}
with h5py.File(src, "r") as a, h5py.File(dst + ".tmp", "w") as b:
    b.attrs.update(a.attrs)
    for split, n in keep.items():
        g = b.create_group(split)
        img = a[split]["images"]
        d = g.create_dataset("images", data=img[:n], chunks=(min(1024, n),) + img.shape[1:],
                             compression="gzip", compression_opts=1)
        d.attrs.update(img.attrs)
        g.create_dataset("labels", data=a[split]["labels"][:n])
import os
os.replace(dst + ".tmp", dst)
PY
  du -h "$root/.gpu-bundle/fashion-mnist.h5"
fi
