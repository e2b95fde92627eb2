#!/usr/bin/env bash
# The two set-up commands of README:
#   ./run.sh          create .venv if missing (tools/install.sh), then run the mini recipe end to end
#   ./run.sh test     same set-up, then the test suite (extra arguments go to pytest)
# Any other arguments are passed to recipes/mini/run.sh (e.g. ./run.sh --stage 3).
set -euo pipefail
cd "$(dirname "$0")"
t0=${SECONDS}
tools/install.sh
install_s=$((SECONDS - t0))
if [ "${1:-}" = test ]; then
    shift
    exec .venv/bin/python -m pytest -q tests "$@"
fi
recipes/mini/run.sh "$@"
echo
echo "Time: install ${install_s} s, recipe $((SECONDS - t0 - install_s)) s (per stage: the 'done' line above), total $((SECONDS - t0)) s"
echo "Results: recipes/mini/RESULTS.md (all experiments), recipes/mini/exp/*/results.md (per experiment)"
echo "Plots:   recipes/mini/exp/*/confusion.png, recipes/mini/exp/*/channel_attention.png"
