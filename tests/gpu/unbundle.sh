# Sourced on a GPU machine without a3fta's build dependencies:
#   . tests/gpu/unbundle.sh     (after tests/gpu/bundle.sh made .gpu-bundle/)
# Unpacks the bundle into /tmp/a3fta-bundle and points the loader, Open MPI
# and PMIx at it; cuBLAS, NCCL and cuDNN (optional, loaded at run time) come
# from the machine's CUDA toolkit or its Python wheels (nvidia-cublas,
# nvidia-nccl, nvidia-cudnn), whichever is found first.
a3b=/tmp/a3fta-bundle
rm -rf "$a3b" && mkdir -p "$a3b" && tar -C "$a3b" -xJf .gpu-bundle/bundle.tar.xz
cuda_libs=""
for pattern in /usr/local/cuda/lib64/libcublas.so.* /usr/local/cuda/targets/*/lib/libcublas.so.* \
  /opt/*/.venv/lib/python3*/site-packages/nvidia/cu*/lib/libcublas.so.* \
  /usr/local/lib/python3*/dist-packages/nvidia/cu*/lib/libcublas.so.* \
  /opt/*/.venv/lib/python3*/site-packages/nvidia/nccl/lib/libnccl.so.* \
  /opt/*/.venv/lib/python3*/site-packages/nvidia/cu*/lib/libnccl.so.* \
  /usr/local/cuda/lib64/libnccl.so.* /usr/lib/x86_64-linux-gnu/libnccl.so.* \
  /opt/*/.venv/lib/python3*/site-packages/nvidia/cudnn/lib/libcudnn.so.9 \
  /usr/local/lib/python3*/dist-packages/nvidia/cudnn/lib/libcudnn.so.9 \
  /usr/local/cuda/lib64/libcudnn.so.9 /usr/local/cuda/lib/libcudnn.so.9 \
  /usr/lib/x86_64-linux-gnu/libcudnn.so.9; do
  for f in $pattern; do [ -e "$f" ] && cuda_libs="$cuda_libs:$(dirname "$f")"; done
done
export LD_LIBRARY_PATH="$a3b/lib$cuda_libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export OMPI_MCA_mca_base_component_path="$a3b/openmpi/lib/openmpi3"
export PMIX_MCA_mca_base_component_path="$a3b/pmix/lib/pmix"
export OPAL_PKGDATADIR="$a3b/openmpi/share"
# A lone rank needs no orted. Isolated singletons share one session folder, which
# the first to exit removes: fine here, as run.sh starts one process at a time.
export OMPI_MCA_ess_singleton_isolated=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export A3FTA_GPU_PREBUILT="$a3b/bin"
echo "bundle: $a3b; CUDA libraries from:${cuda_libs//:/ }"
if [ ! -s data/fashion-mnist.h5 ] && [ -s .gpu-bundle/fashion-mnist.h5 ]; then
  mkdir -p data && cp .gpu-bundle/fashion-mnist.h5 data/fashion-mnist.h5
  echo "data/fashion-mnist.h5: the bundle's subset (20000 train, 2000 test images)"
fi
