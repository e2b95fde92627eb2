#!/usr/bin/env bash
# Cross-corpus SER: every fold model of the source recipe tested on all utterances of the target corpus.
# Reuses the source's trained folds (exp/) and the target's manifest and dump (same encoder, checked);
# nothing that exists is recomputed. Run both directions for the paper's table:
#   (cd ../IEMOCAP && ./run.sh --stage 0 --stop_stage 2); (cd ../MSP-IMPROV && ./run.sh --stage 0 --stop_stage 2)
#   ./run.sh --source IEMOCAP --target MSP-IMPROV
#   ./run.sh --source MSP-IMPROV --target IEMOCAP
# Writes exp/<source>_to_<target>_<model>_<encoder>_<protocol>/ (fold predictions, results.json/.md,
# confusion.png), RESULTS.md, and CROSS_CORPUS_<model>_<encoder>_<protocol>.md with both directions
# next to the within-corpus results. Every source fold is checked (finished, same encoder as the target's
# dump, every target emotion among its labels) before any is tested; a problem is one line with what to run.
# The Python output goes to exp/<source>_to_<target>_<...>.log.
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
force=false            # true: test again the fold models whose target predictions exist
python=""
__option_names="source target encoder model protocol tag train_args train_config force python"
__argv=("$@")
. ../shared/parse_options.sh

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') (cross_corpus) $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
error_line() {  # error_line <file>: the line that says what went wrong (after the last "=== " header)
    local line
    line=$(awk '/^=== /{n = 0; next} {buf[n++] = $0} END{for (i = 0; i < n; i++) print buf[i]}' "$1" \
        | grep -E '^(error: |ERROR|[A-Za-z_.]*(Error|Exception|Interrupt)\b)' | tail -n 1) || true
    [ -n "${line}" ] || line=$(grep -v '^[[:space:]]*$' "$1" | tail -n 1) || true
    line="${line:-no output}"
    echo "${line#error: }" | cut -c1-600
}
case "${force}" in true|false) ;; *) die "--force takes true or false, got '${force}'" ;; esac
for r in "${source}" "${target}"; do
    [ -n "${r}" ] && [ -d "../${r}" ] || die "no recipe '${r}' next to cross_corpus (--source/--target name a recipe folder)"
done
if [ -z "${python}" ]; then
    if [ -x ../../.venv/bin/python ]; then python=../../.venv/bin/python; else python=python3; fi
fi
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
export PYTHONPATH="../..${PYTHONPATH:+:${PYTHONPATH}}"

own=(); [ -n "${train_config}" ] && own=(--train_config "../${source}/${train_config}")
err=$(mktemp)
# shellcheck disable=SC2086
suffix=$("${python}" -m cta_rnn.driver suffix "${own[@]}" ../shared/hparams/train.yaml \
    -- ${train_args} "${extra_args[@]}" 2> "${err}" < /dev/null) || { msg=$(error_line "${err}"); rm -f "${err}"; die "${msg}"; }
rm -f "${err}"
exp_name="${model}_${encoder}_${protocol}${tag:+_${tag}}${suffix:+_${suffix}}"
src_exp="../${source}/exp/${exp_name}"
tgt_manifest="../${target}/data/manifest.csv"
tgt_store="../${target}/dump/${encoder}"
# the source recipe's options that trained src_exp (what to run there to train or finish it)
src_opts="--encoder ${encoder} --model ${model} --protocol ${protocol}${tag:+ --tag ${tag}}"
src_opts+="${train_config:+ --train_config ${train_config}}"
quote() { if [[ "$1" == *"'"* ]]; then printf '%q' "$1"; else printf "'%s'" "$1"; fi; }
[ -z "${train_args}" ] || src_opts+=" --train_args $(quote "${train_args}")"
[ "${#extra_args[@]}" -eq 0 ] || src_opts+=" --$(printf ' %q' "${extra_args[@]}")"
[ -d "${src_exp}" ] || die "${src_exp} missing: train it (cd ../${source} && ./run.sh --stage 0 --stop_stage 2 ${src_opts})"
[ -f "${tgt_manifest}" ] || die "${tgt_manifest} missing: run stage 0 of ../${target}"
[ -f "${tgt_store}/DONE" ] || die "${tgt_store} is not a finished dump: cd ../${target} && ./run.sh --stage 1 --stop_stage 1 --encoder ${encoder}"
src_advice="finish it: cd ../${source} && ./run.sh --stage 2 --stop_stage 2 --folds {fold} ${src_opts}"
tgt_advice="dump the target as the source was: cd ../${target} && ./run.sh --stage 1 --stop_stage 1 --encoder ${encoder} --force true (replaces that dump)"
fopt=(); [ "${force}" = true ] && fopt=(--force)
out="exp/${source}_to_${target}_${exp_name}"
logf="${out}.log"
mkdir -p exp
log "Stage 3x: cross-corpus test, ${src_exp}/fold* + ${tgt_store} -> ${out} (log: ${logf})"
{ printf '=== %s' "$(date '+%F %T')"; printf ' %q' "$0" "${__argv[@]}"; echo; } >> "${logf}"
if ! "${python}" -m cta_rnn.cross_eval --source_exp "${src_exp}" --target_manifest "${tgt_manifest}" \
    --target_store "${tgt_store}" --out "${out}" --recipe_root . --summary "CROSS_CORPUS_${exp_name}.md" \
    --corpora "${source},${target}" --source_advice "${src_advice}" --target_advice "${tgt_advice}" "${fopt[@]}" \
    < /dev/null >> "${logf}" 2>&1; then
    die "cross-corpus test failed: $(error_line "${logf}") (log: ${logf})"
fi
cat "CROSS_CORPUS_${exp_name}.md"
log "done: ${out}/results.md, CROSS_CORPUS_${exp_name}.md"
