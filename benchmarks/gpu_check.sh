#!/usr/bin/env bash
# The device paths on a real GPU, in one call of at most 8 minutes on one H100/H200 (issue 22).
#
#   tools/gpu_carry.sh                 # here (network to PyPI): wheels the GPU image lacks + the WeNet fixture
#                                      #   -> benchmarks/gpu_carry/ (gitignored; carry it to the GPU machine)
#   benchmarks/gpu_check.sh --dry-run  # here: arguments, paths, carried wheels and scripts, no CUDA call
#   benchmarks/gpu_check.sh            # there, from the repository root: installs the carried wheels into
#                                      #   /tmp/site, then runs the checks below; exits non-zero on any failure
#
# Steps (each with its own time limit; every one prints RESULT lines):
#   1. bench_dump.py --shape large-v3 --device cuda    stage 1 against the bare encoder (random-weight large-v3)
#   2. bench_train.py --shape large-v3 --device cuda   the read path in every cache mode against memcpy
#   3. gpu_checks.py e2e --device cuda                 dump vs CPU float32, training in gpu/ram/stream cache
#                                                      modes (same batches), classify_file, predict --adapt
#   4. gpu_checks.py wenet --device cuda               the WeNet fixture in float32/float16/bfloat16 vs reference
# Options: --dry-run, --carry DIR (default benchmarks/gpu_carry), --python EXE (default python3),
#          --n N (utterances of the large-v3 benchmarks, default 96), --device DEV (default cuda).
set -euo pipefail
cd "$(dirname "$0")/.."

dry_run=false
carry=benchmarks/gpu_carry
python=${PYTHON:-python3}
n=96
device=cuda
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) dry_run=true; shift ;;
        --carry) carry=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        --n) n=$2; shift 2 ;;
        --device) device=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$n" in ''|*[!0-9]*) echo "gpu_check.sh: --n $n: not a positive integer" >&2; exit 2 ;; esac

# the packages the GPU image lacks (../shared/gpu.md), as wheel name prefixes
needed=(speechbrain hyperpyyaml ruamel_yaml ruamel_yaml_clib soundfile cffi pycparser)
fail() { echo "gpu_check.sh: $*" >&2; exit 1; }

[ -d "$carry/wheels" ] || fail "$carry/wheels: missing (run tools/gpu_carry.sh here and carry $carry)"
for pkg in "${needed[@]}"; do
    ls "$carry/wheels/${pkg}"-[0-9]*.whl >/dev/null 2>&1 || fail "$carry/wheels: no wheel for $pkg (run tools/gpu_carry.sh)"
done
[ -f "$carry/wenet_u2pp_tiny/reference.pt" ] || fail "$carry/wenet_u2pp_tiny/reference.pt: missing (run tools/gpu_carry.sh)"
for script in benchmarks/bench_dump.py benchmarks/bench_train.py benchmarks/gpu_checks.py; do
    [ -f "$script" ] || fail "$script: missing"
done
command -v "$python" >/dev/null || fail "--python $python: not found"

if $dry_run; then
    # the scripts' own argument parsing, without touching CUDA
    for script in benchmarks/bench_dump.py benchmarks/bench_train.py benchmarks/gpu_checks.py; do
        "$python" "$script" --help >/dev/null || fail "$script --help failed"
    done
    echo "dry run ok: $(ls "$carry"/wheels/*.whl | wc -l) wheels, fixture, scripts; would run on $device:"
    echo "  $python benchmarks/bench_dump.py --shape large-v3 --device $device --n $n"
    echo "  $python benchmarks/bench_train.py --shape large-v3 --device $device --n $n --threads 8"
    echo "  $python benchmarks/gpu_checks.py e2e --device $device"
    echo "  $python benchmarks/gpu_checks.py wenet --device $device --fixture $carry/wenet_u2pp_tiny"
    exit 0
fi

site=/tmp/cta_rnn_site
missing=()
for mod in speechbrain hyperpyyaml ruamel.yaml soundfile; do
    "$python" -c "import $mod" 2>/dev/null || missing+=("$mod")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing the carried wheels into $site (missing: ${missing[*]})"
    "$python" -m pip install -q --no-index --no-deps --target "$site" "$carry"/wheels/*.whl
fi
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$python" -c "import torch; assert torch.cuda.is_available() or '$device' == 'cpu', 'no CUDA device'; \
print('RESULT machine', torch.__version__, torch.version.cuda, \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
echo "RESULT commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"

step() {  # step SECONDS NAME COMMAND...: run with a limit; a failure stops the script with its name
    local limit=$1 name=$2; shift 2
    local start=$SECONDS
    echo "=== $name"
    timeout "$limit" "$@" || fail "step '$name' failed (exit $?)"
    echo "RESULT step $name seconds=$((SECONDS - start)) ok"
}
step 150 dump_large_v3 "$python" benchmarks/bench_dump.py --shape large-v3 --device "$device" --n "$n"
step 120 read_path_large_v3 "$python" benchmarks/bench_train.py --shape large-v3 --device "$device" --n "$n" --threads 8
step 150 e2e "$python" benchmarks/gpu_checks.py e2e --device "$device"
step 40 wenet "$python" benchmarks/gpu_checks.py wenet --device "$device" --fixture "$carry/wenet_u2pp_tiny"
echo "gpu_check.sh: all steps passed"
