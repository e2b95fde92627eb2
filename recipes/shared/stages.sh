#!/usr/bin/env bash
# The stage driver shared by every recipe (ESPnet asr.sh's role). A recipe's run.sh sets its
# corpus-specific defaults and calls this script with "$@"; run from the recipe folder.
#
#   0  data prep      corpus -> data/manifest.csv + data/folds/<protocol>/fold<k>/{train,valid,test}.csv
#                     (the recipe's local/data_prep.sh <corpus_root> data [prep_opts])
#   1  embedding dump data/manifest.csv -> dump/<encoder>/ (frozen encoder, all folds share it)
#   2  training       dump + folds -> exp/<model>_<encoder>_<protocol>[_<tag>]/fold<k>/
#   3  scoring        exp/<...>/fold*/predictions.csv -> results.json, results.md, plots, RESULTS.md
#   4  ablations      stages 2-3 for each model in --ablations (paired per-fold differences to --model, with
#                     a Wilcoxon signed-rank test), plus the single-layer sweep (--sweep_layers)
#   5  tuning         every point of hparams/tune.yaml on the same folds; selection by validation UA only
set -euo pipefail

# ---- options (each one is --name value) ----
stage=0
stop_stage=3
corpus_root=""         # corpus location (from db.sh)
prep_opts=""           # extra options for data prep (e.g. "--allow_partial")
encoder=whisper_tiny_en  # hparams/encoder/<encoder>.yaml (recipe first, then recipes/shared)
encoder_opts=""        # encoder YAML overrides for the dump, e.g. "input=trimmed layers=0-4"
dump_opts=""           # extra options of cta_rnn.dump (e.g. "--on_error skip --num_workers 4")
protocol=loso_speaker  # loso_speaker | loso_session | given (custom corpus with a split column)
folds=""               # subset of folds, e.g. "1,3" or "1-2" (empty = all)
model=cta_rnn          # hparams/model/<model>.yaml: overrides of the training YAML
train_config=""        # training YAML (default: hparams/train.yaml of the recipe, else the shared one)
train_args=""          # extra training overrides, e.g. "--number_of_epochs=20 --lr=0.0005"
tag=""                 # suffix of the experiment folder name
device=auto            # auto | cpu | cuda | cuda:1
ngpu=1                 # >1: torchrun DDP with this many processes per node
nj=1                   # folds trained in parallel (CPU: each gets nproc/nj threads)
ablations="no_channel_attention no_temporal_attention last_layer superb"  # models of stage 4
sweep_layers=""        # stage 4 single-layer sweep, e.g. "0 1 2 3 4" (empty = none)
force=false            # redo finished stages (dump, training folds)
python=""              # python to use (default: <repo>/.venv/bin/python, else python3)
__option_names="stage stop_stage corpus_root prep_opts encoder encoder_opts dump_opts protocol folds model
 train_config train_args tag device ngpu nj ablations sweep_layers force python"
__option_names="${__option_names//$'\n'/ }"

__argv=("$@")
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
# shellcheck source=parse_options.sh
. "${here}/parse_options.sh"

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') ($(basename "$(pwd)")) $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ -z "${python}" ]; then
    if [ -x "${repo}/.venv/bin/python" ]; then python="${repo}/.venv/bin/python"; else python=python3; fi
fi
export python
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # see cta_rnn/__init__.py
export PYTHONPATH="${repo}${PYTHONPATH:+:${PYTHONPATH}}"
if [ "${device}" = auto ]; then
    device=$("${python}" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
fi

find_conf() {  # find_conf <subdir> <name>: recipe hparams first, then the shared ones
    local f
    for f in "hparams/$1/$2.yaml" "${here}/hparams/$1/$2.yaml"; do
        [ -f "${f}" ] && { echo "${f}"; return 0; }
    done
    die "no $1 config '$2': looked for hparams/$1/$2.yaml and ${here}/hparams/$1/$2.yaml"
}
[ -n "${train_config}" ] || { [ -f hparams/train.yaml ] && train_config=hparams/train.yaml; } \
    || train_config="${here}/hparams/train.yaml"
encoder_yaml="$(find_conf encoder "${encoder}")"
recipe_conf=()  # the recipe's own training overrides (epochs, batch size...), applied before the model's
[ -f hparams/train_overrides.yaml ] && recipe_conf=(--conf hparams/train_overrides.yaml)
dump_dir="dump/${encoder}"

fold_list() {  # the folds of the protocol, restricted by --folds (checked and de-duplicated in Python)
    local out
    out=$("${python}" -m cta_rnn.artifacts folds --protocol_dir "data/folds/${protocol}" --select "${folds}" 2>&1) \
        || die "${out#error: }"
    echo "${out}"
}

train_folds() {  # train_folds <model> <expdir> [overrides...]: stage 2 for one model
    local m="$1" expdir="$2"; shift 2
    local conf k launcher
    conf="$(find_conf model "${m}")"
    local data_conf=()  # overrides written by data prep (e.g. a custom corpus's labels), after the recipe's
    if [ -f data/train_overrides.yaml ]; then data_conf=(--conf data/train_overrides.yaml); fi
    mkdir -p "${expdir}"
    { echo "#!/usr/bin/env bash"; echo "# replay of stage 2 for this experiment ($(date -u '+%F %T') UTC)";
      printf 'cd %q && %q' "$(pwd)" "$0"; printf ' %q' "${__argv[@]}"; echo; } > "${expdir}/run.sh"
    chmod +x "${expdir}/run.sh"
    local selected
    selected=$(fold_list)
    # shellcheck disable=SC2086
    "${python}" -m cta_rnn.artifacts experiment --exp "${expdir}" --store "${dump_dir}" --folds ${selected} \
        || die "cannot start ${expdir}"
    launcher=("${python}" -m cta_rnn.train)
    if [ "${ngpu}" -gt 1 ]; then
        launcher=("${python}" -m torch.distributed.run --nproc_per_node="${ngpu}" -m cta_rnn.train)
    fi
    local pids=() failed=0 pid
    if [ "${nj}" -gt 1 ] && [ -z "${OMP_NUM_THREADS:-}" ]; then
        export OMP_NUM_THREADS=$(( $(nproc) / nj > 0 ? $(nproc) / nj : 1 ))
    fi
    for k in ${selected}; do
        log "Stage 2: train ${m} fold ${k}, ${dump_dir} + data/folds/${protocol}/fold${k} -> ${expdir}/fold${k}"
        cmd=("${launcher[@]}" "${train_config}" "${recipe_conf[@]}" "${data_conf[@]}" --conf "${conf}"
            --fold_dir="data/folds/${protocol}/fold${k}" --store_dir="${dump_dir}"
            --output_folder="${expdir}/fold${k}" --device="${device}" --force="${force}")
        # shellcheck disable=SC2206
        cmd+=(${train_args} "$@" "${extra_args[@]}")
        if [ "${nj}" -le 1 ]; then
            "${cmd[@]}"
            continue
        fi
        mkdir -p "${expdir}/fold${k}"
        "${cmd[@]}" > "${expdir}/fold${k}/stdout.log" 2>&1 &
        pids+=($!)
        while [ "$(jobs -rp | wc -l)" -ge "${nj}" ]; do sleep 1; done
    done
    for pid in "${pids[@]}"; do wait "${pid}" || failed=$((failed + 1)); done
    [ "${failed}" -eq 0 ] || die "${failed} fold(s) of ${expdir} failed: see ${expdir}/fold*/stdout.log"
}

score_exp() {  # score_exp <expdir>
    local n
    n=$(find "data/folds/${protocol}" -maxdepth 1 -name 'fold*' -type d | wc -l)
    log "Stage 3: score, $1/fold*/predictions.csv -> $1/results.{json,md} + RESULTS.md"
    "${python}" -m cta_rnn.score --exp "$1" --recipe_root . \
        || die "scoring $1 failed"
    [ "$(fold_list | wc -l)" -lt "${n}" ] && log "note: scored a subset of folds (--folds ${folds})"
    return 0
}

expname() { echo "${1}_${encoder}_${protocol}${tag:+_${tag}}"; }

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
    log "Stage 0: data prep, ${corpus_root:-<generated>} -> data/manifest.csv, data/folds/${protocol}"
    [ -x local/data_prep.sh ] || die "local/data_prep.sh missing in $(pwd)"
    # shellcheck disable=SC2086
    local/data_prep.sh "${corpus_root}" data ${prep_opts}
    [ -f data/manifest.csv ] || die "data prep wrote no data/manifest.csv"
    [ -d "data/folds/${protocol}" ] || die "data prep wrote no data/folds/${protocol}"
fi

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
    log "Stage 1: embedding dump, data/manifest.csv -> ${dump_dir} (encoder ${encoder_yaml})"
    fopt=(); [ "${force}" = true ] && fopt=(--force)
    # shellcheck disable=SC2086
    "${python}" -m cta_rnn.dump --manifest data/manifest.csv --encoder "${encoder_yaml}" --out "${dump_dir}" \
        --device "${device}" ${dump_opts} "${fopt[@]}" ${encoder_opts}
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
    train_folds "${model}" "exp/$(expname "${model}")"
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
    score_exp "exp/$(expname "${model}")"
fi

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
    ablated=()
    for m in ${ablations}; do
        log "Stage 4: ablation ${m}"
        train_folds "${m}" "exp/$(expname "${m}")"
        score_exp "exp/$(expname "${m}")"
        ablated+=("exp/$(expname "${m}")")
    done
    if [ "${#ablated[@]}" -gt 0 ]; then
        [ -f "exp/$(expname "${model}")/results.json" ] || die "stage 4 compares with exp/$(expname "${model}"): run stages 2-3 first"
        log "Stage 4: per-fold paired differences to ${model} -> exp/ablations_${encoder}_${protocol}.md"
        "${python}" -m cta_rnn.score --no_results_md --paired "exp/$(expname "${model}")" "${ablated[@]}" \
            --paired_out "exp/ablations_${encoder}_${protocol}" || die "paired comparison failed"
    fi
    if [ -n "${sweep_layers}" ]; then
        sweep=()
        for l in ${sweep_layers}; do
            log "Stage 4: single-layer sweep, layer ${l}"
            train_folds single_layer "exp/$(expname "single_layer${l}")" "--layers=[${l}]"
            score_exp "exp/$(expname "single_layer${l}")"
            sweep+=("${l}=exp/$(expname "single_layer${l}")")
        done
        "${python}" -m cta_rnn.score --no_results_md --sweep "${sweep[@]}" \
            --sweep_png "exp/layer_sweep_${encoder}_${protocol}.png"
    fi
fi
if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
    # Hyperparameter search on validation data only: every point of hparams/tune.yaml on the same folds,
    # selected by mean validation UA over folds; the chosen point's test UA is reported once.
    tune_yaml="$(find_conf "" tune)"
    tuned=()
    while IFS=$'\t' read -r point overrides; do
        log "Stage 5: tune ${point}: ${overrides}"
        # shellcheck disable=SC2086
        train_folds "${model}" "exp/$(expname "${model}")_tune_${point}" ${overrides}
        tuned+=("exp/$(expname "${model}")_tune_${point}")
    done < <("${python}" -m cta_rnn.tune points "${tune_yaml}" || die "bad tune grid ${tune_yaml}")
    "${python}" -m cta_rnn.tune select --out "exp/tune_$(expname "${model}")" "${tuned[@]}" \
        || die "tune selection failed"
fi
log "done (stages ${stage}-${stop_stage})"
