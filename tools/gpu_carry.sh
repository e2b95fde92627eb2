#!/usr/bin/env bash
# What benchmarks/gpu_check.sh needs on the GPU machine (no network there), gathered here into
# benchmarks/gpu_carry/ (gitignored, ~4 MB): the cp312 manylinux wheels its image lacks (../shared/gpu.md)
# and the WeNet U2++ fixture. Re-running it is a no-op when everything is there.
#   tools/gpu_carry.sh [--python-version 3.12] [--fixture ../shared/fixtures/wenet_u2pp_tiny]
set -euo pipefail
cd "$(dirname "$0")/.."
pyver=3.12
fixture=../shared/fixtures/wenet_u2pp_tiny
while [ $# -gt 0 ]; do
    case "$1" in
        --python-version) pyver=$2; shift 2 ;;
        --fixture) fixture=$2; shift 2 ;;
        *) echo "gpu_carry.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
out=benchmarks/gpu_carry
mkdir -p "$out/wheels"
python=.venv/bin/python
[ -x "$python" ] || python=python3
"$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$out/wheels" speechbrain==1.1.2 hyperpyyaml==1.2.3 ruamel.yaml==0.18.17 ruamel.yaml.clib==0.2.15 \
    soundfile==0.13.1 cffi==2.1.1 pycparser==3.12
[ -f "$fixture/reference.pt" ] || { echo "gpu_carry.sh: $fixture/reference.pt: missing" >&2; exit 1; }
mkdir -p "$out/wenet_u2pp_tiny"
cp -r "$fixture"/. "$out/wenet_u2pp_tiny/"
echo "ready: $out ($(du -sh "$out" | cut -f1)); carry it: device run with carry [\"$out\"]"
