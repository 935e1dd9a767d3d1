#!/usr/bin/env bash
# Run here, on the CPU machine, before benchmarks/gpu_session.sh goes to a lent GPU. It fills .gpu_carry/ (ignored by
# git) with what the GPU machine lacks, for the device tool's `carry`:
#   - wheels of the packages the trainer imports that the GPU image does not hold (ml-collections, tensorboardX;
#     the image has jax, flax, optax, orbax, absl, PyYAML, protobuf and PyTorch: /work/.library/device/KINDS.md);
#   - the CIFAR-10 JPEG proxy, gzipped: ../shared does not travel, and the 92 MB tar is 20 MB gzipped (its 60,000
#     JPEGs repeat the same headers and tables), well inside the 64 MiB a call may carry.
#   bash benchmarks/gpu_prepare.sh && du -sh .gpu_carry
set -euo pipefail
cd "$(dirname "$0")/.."
carry=.gpu_carry
proxy=../shared/data/cifar10_jpeg/cifar10_jpeg.tar
rm -rf "$carry"
mkdir -p "$carry/wheels"
# Pure-Python wheels, pinned to the versions this checkout is tested with; the GPU image's Python is 3.12.
for package in ml-collections tensorboardX; do
  version=$(python -c "import importlib.metadata as m; print(m.version('$package'))")
  python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d "$carry/wheels" "$package==$version"
done
if [ -f "$proxy" ]; then
  gzip -c "$proxy" > "$carry/cifar10_jpeg.tar.gz"
else
  echo "gpu_prepare: $proxy not found: the end-to-end part of gpu_session.sh will have no data." >&2
fi
ls -l "$carry" "$carry/wheels"
du -sh "$carry"
