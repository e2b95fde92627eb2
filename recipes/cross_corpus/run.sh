#!/usr/bin/env bash
# Cross-corpus SER: every fold model of the source recipe tested on all utterances of the target corpus.
# Reuses the source's trained folds (exp/) and the target's manifest and dump (same encoder, checked);
# nothing that exists is recomputed. Run both directions for the paper's table:
#   (cd ../IEMOCAP && ./run.sh --stage 0 --stop_stage 2); (cd ../MSP-IMPROV && ./run.sh --stage 0 --stop_stage 2)
#   ./run.sh --source IEMOCAP --target MSP-IMPROV
#   ./run.sh --source MSP-IMPROV --target IEMOCAP
# Writes exp/<source>_to_<target>_<model>_<encoder>_<protocol>/ (fold predictions, results.json/.md,
# confusion.png), RESULTS.md, and CROSS_CORPUS_<model>_<encoder>_<protocol>.md with both directions
# next to the within-corpus results.
set -euo pipefail
cd "$(dirname "$0")"
source=IEMOCAP          # recipe folder whose fold models are tested
target=MSP-IMPROV       # recipe folder whose manifest + dump are the test set
encoder=whisper_tiny_en
model=cta_rnn
protocol=loso_speaker
tag=""
train_args=""          # the source's training overrides (they name its experiment, as in ../shared/stages.sh)
train_config=""        # the source's own training YAML, if it had one
force=false
python=""
__option_names="source target encoder model protocol tag train_args train_config force python"
. ../shared/parse_options.sh

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (cross_corpus) $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
if [ -z "${python}" ]; then
    if [ -x ../../.venv/bin/python ]; then python=../../.venv/bin/python; else python=python3; fi
fi
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

own=(); [ -n "${train_config}" ] && own=(--train_config "../${source}/${train_config}")
# shellcheck disable=SC2086
suffix=$(PYTHONPATH="../..${PYTHONPATH:+:${PYTHONPATH}}" "${python}" -m cta_rnn.hparams_schema suffix "${own[@]}" \
    ../shared/hparams/train.yaml -- ${train_args} "${extra_args[@]}") || die "bad --train_args / --train_config"
exp_name="${model}_${encoder}_${protocol}${tag:+_${tag}}${suffix:+_${suffix}}"
src_exp="../${source}/exp/${exp_name}"
tgt_manifest="../${target}/data/manifest.csv"
tgt_store="../${target}/dump/${encoder}"
[ -d "${src_exp}" ] || die "${src_exp} missing: train it (cd ../${source} && ./run.sh --stage 0 --stop_stage 2 --encoder ${encoder} --model ${model} --protocol ${protocol})"
[ -f "${tgt_manifest}" ] || die "${tgt_manifest} missing: run stage 0 of ../${target}"
[ -f "${tgt_store}/DONE" ] || die "${tgt_store} is not a finished dump: cd ../${target} && ./run.sh --stage 1 --stop_stage 1 --encoder ${encoder}"
fopt=(); [ "${force}" = true ] && fopt=(--force)
log "Stage 3x: cross-corpus test, ${src_exp}/fold* + ${tgt_store} -> exp/${source}_to_${target}_${exp_name}"
"${python}" -m cta_rnn.cross_eval --source_exp "${src_exp}" --target_manifest "${tgt_manifest}" \
    --target_store "${tgt_store}" --out "exp/${source}_to_${target}_${exp_name}" --recipe_root . \
    --summary "CROSS_CORPUS_${exp_name}.md" --corpora "${source},${target}" "${fopt[@]}"
