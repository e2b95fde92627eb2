#!/usr/bin/env bash
# The stage driver shared by every recipe (ESPnet asr.sh's role). A recipe's run.sh sets its
# corpus-specific defaults and calls this script with "$@"; run from the recipe folder.
#
#   0  data prep      corpus -> data/manifest.csv + data/folds/<protocol>/fold<k>/{train,valid,test}.csv
#                     (the recipe's local/data_prep.sh <corpus_root> data [prep_opts])
#   1  embedding dump data/manifest.csv -> dump/<encoder>/ (frozen encoder, all folds share it)
#   2  training       dump + folds -> exp/<model>_<encoder>_<protocol>[_<tag>][_<overrides>]/fold<k>/
#                     (<overrides>: what --train_args, --train_config and the arguments after -- change, e.g.
#                     lr0.0005, or cfg<8 hex digits> when long; see cta_rnn/hparams_schema.py)
#   3  scoring        exp/<...>/fold*/predictions.csv -> results.json, results.md, plots, RESULTS.md
#   4  ablations      stages 2-3 for each model in --ablations (paired per-fold differences to --model, with
#                     a Wilcoxon signed-rank test), plus the single-layer sweep (--sweep_layers)
#   5  tuning         every point of hparams/tune.yaml on the same folds (all checked before the first trains);
#                     selection by validation UA only, a fold subset labelled as one
#
# Every Python step writes its output to a log (data/prep.log, dump/<encoder>.log, exp/<name>/fold<k>/stdout.log,
# exp/<name>/score.log, ...); the console shows each step, its last line and its warnings, and a failure as one
# line with the log's path. Options and training overrides are checked before anything is created.
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
paired_metric=ua       # stage 4 paired differences on: ua | wa | macro_f1 | ccc | ccc_<dimension> (e.g. ccc_arousal)
force=false            # true: redo finished stages (dump, training folds from scratch)
python=""              # python to use (default: <repo>/.venv/bin/python, else python3)
__option_names="stage stop_stage corpus_root prep_opts encoder encoder_opts dump_opts protocol folds model
 train_config train_args tag device ngpu nj ablations sweep_layers paired_metric force python"
__option_names="${__option_names//$'\n'/ }"

__argv=("$@")
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
# shellcheck source=parse_options.sh
. "${here}/parse_options.sh"

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') ($(basename "$(pwd)")) $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---- one line per failure: Python output goes to logs ----
last_run() {  # last_run <log>: the lines of the latest run in an appended log (after its last "=== " header)
    awk '/^=== /{n = 0; next} {buf[n++] = $0} END{for (i = 0; i < n; i++) print buf[i]}' "$1"
}
last_error() {  # last_error <log>: the line of a log that says what went wrong
    local line
    line=$(last_run "$1" | grep -E '^(error: |ERROR|[A-Za-z_.]*(Error|Exception|Interrupt)\b)' | tail -n 1) || true
    [ -n "${line}" ] || line=$(last_run "$1" | grep -v '^[[:space:]]*$' | tail -n 1) || true
    echo "${line:-no output}" | cut -c1-400
}
start_log() {  # start_log <log> <cmd...>: append a header naming the command
    mkdir -p "$(dirname "$1")"
    { printf '=== %s' "$(date '+%F %T')"; printf ' %q' "${@:2}"; echo; } >> "$1"
}
log_noise="torchvision is not available"  # warnings every run prints: not shown on the console
show_warnings() {  # show_warnings <log>: the warnings of a successful step, on the console
    last_run "$1" | grep -E '(^|[^A-Za-z])(WARNING|warning:)' | grep -v "${log_noise}" | head -n 20 | cut -c1-300 >&2 \
        || true
}
show_log() {  # show_log <log>: the warnings and the last line of a successful step, on the console
    show_warnings "$1"
    last_run "$1" | grep -v '^[[:space:]]*$' | tail -n 1 | cut -c1-300 | sed 's/^/    /' >&2 || true
}
run_logged() {  # run_logged <log> <what> <cmd...>: output appended to <log>; a failure is one line naming it
    local logf="$1" what="$2"; shift 2
    start_log "${logf}" "$@"
    if "$@" 3>&2 < /dev/null >> "${logf}" 2>&1; then show_log "${logf}"; return 0; fi
    die "${what} failed: $(last_error "${logf}") (log: ${logf})"
}
py_query() {  # py_query <cmd...>: a short check whose stdout is the answer; its error becomes one die line
    local out err
    err=$(mktemp)
    if out=$("$@" 2> "${err}" < /dev/null); then rm -f "${err}"; echo "${out}"; return 0; fi
    out=$(last_error "${err}"); rm -f "${err}"
    die "${out#error: }"
}

# ---- options checked before anything is created ----
case "${force}" in true|false) ;; *) die "--force takes true or false, got '${force}'" ;; esac
for v in stage stop_stage nj ngpu; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "--${v} takes a whole number, got '${!v}'"
done
[ "${nj}" -ge 1 ] && [ "${ngpu}" -ge 1 ] || die "--nj and --ngpu must be at least 1"

if [ -z "${python}" ]; then
    if [ -x "${repo}/.venv/bin/python" ]; then python="${repo}/.venv/bin/python"; else python=python3; fi
fi
export python
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"  # see cta_rnn/__init__.py
export CTA_RNN_CONSOLE_FD=3  # Python steps draw their progress on the console (fd 3), their logs get the rest

timings=""  # "stage N S s" of each stage run, printed at the end
stage_begin() { stage_now=$1; stage_t0=${SECONDS}; }
stage_end() { timings+="${timings:+, }stage ${stage_now} $((SECONDS - stage_t0)) s"; }
export PYTHONPATH="${repo}${PYTHONPATH:+:${PYTHONPATH}}"
py_query "${python}" -m cta_rnn.driver protocol "${protocol}" > /dev/null

find_conf() {  # find_conf <subdir> <name>: recipe hparams first, then the shared ones
    local f names
    for f in "hparams/$1/$2.yaml" "${here}/hparams/$1/$2.yaml"; do
        [ -f "${f}" ] && { echo "${f}"; return 0; }
    done
    names=$(find "hparams/$1" "${here}/hparams/$1" -maxdepth 1 -name '*.yaml' 2>/dev/null \
        | sed 's|.*/||; s|\.yaml$||' | sort -u | tr '\n' ' ')
    die "no $1 config '$2' (a name, not a path): choose from ${names:-none}"
}
own_train_config="${train_config}"
[ -n "${train_config}" ] || { [ -f hparams/train.yaml ] && train_config=hparams/train.yaml; } \
    || train_config="${here}/hparams/train.yaml"
[ -f "${train_config}" ] || die "--train_config ${train_config}: no such file"
encoder_yaml="$(find_conf encoder "${encoder}")"
recipe_conf=()  # the recipe's own training overrides (epochs, batch size...), applied before the model's
[ -f hparams/train_overrides.yaml ] && recipe_conf=(--conf hparams/train_overrides.yaml)
dump_dir="dump/${encoder}"

# The user's training overrides, checked against the declared schema, name the experiment (cta_rnn.driver)
suffix=""
if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 2 ]; then
    own=(); [ -n "${own_train_config}" ] && own=(--train_config "${own_train_config}")
    # shellcheck disable=SC2086
    suffix=$(py_query "${python}" -m cta_rnn.driver suffix "${own[@]}" "${train_config}" \
        -- ${train_args} "${extra_args[@]}")
fi
if [ "${ngpu}" -gt 1 ] && [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 2 ]; then
    py_query "${python}" -m cta_rnn.driver ngpu "${ngpu}" > /dev/null  # before torchrun, not inside it
fi
if [ "${device}" = auto ]; then
    device=$(py_query "${python}" -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
fi

fold_list() {  # the folds of the protocol, restricted by --folds (checked and de-duplicated in Python)
    py_query "${python}" -m cta_rnn.driver folds --protocol_dir "data/folds/${protocol}" --select "${folds}"
}

store_checked=false
check_store() {  # stage 2 needs a finished stage 1 (checked once, before any experiment folder is made)
    "${store_checked}" && return 0
    py_query "${python}" -m cta_rnn.driver store "${dump_dir}" > /dev/null
    store_checked=true
}

write_replay() {  # write_replay <file>: the command line of this run (installed as exp/<name>/run.sh by training)
    { echo "#!/usr/bin/env bash"; echo "# replay of stage 2 for this experiment ($(date -u '+%F %T') UTC)";
      printf 'cd %q && %q' "$(pwd)" "$0"; printf ' %q' "${__argv[@]}"; echo; } > "$1"
}

train_folds() {  # train_folds <model> <expdir> [overrides...]: stage 2 for one model
    local m="$1" expdir="$2"; shift 2
    local conf k selected replay flog
    conf="$(find_conf model "${m}")"
    selected=$(fold_list)
    check_store
    local data_conf=()  # overrides written by data prep (e.g. a custom corpus's labels), after the recipe's
    if [ -f data/train_overrides.yaml ]; then data_conf=(--conf data/train_overrides.yaml); fi
    # shellcheck disable=SC2086
    py_query "${python}" -m cta_rnn.driver experiment --exp "${expdir}" --store "${dump_dir}" --folds ${selected} \
        --protocol_dir "data/folds/${protocol}"
    replay="${expdir}/.run.sh.next"  # becomes run.sh when a fold really starts training (cta_rnn.train)
    write_replay "${replay}"
    local launcher=("${python}" -m cta_rnn.train)
    if [ "${ngpu}" -gt 1 ]; then
        launcher=("${python}" -m torch.distributed.run --nproc_per_node="${ngpu}" -m cta_rnn.train)
    fi
    if [ "${nj}" -gt 1 ] && [ -z "${OMP_NUM_THREADS:-}" ]; then
        export OMP_NUM_THREADS=$(( $(nproc) / nj > 0 ? $(nproc) / nj : 1 ))
    fi
    if [ "${nj}" -gt 1 ] && [[ "${device}" == cuda* ]]; then
        export CTA_RNN_PROCESSES_PER_GPU="${nj}"  # the folds at once on one GPU each size their cache to a share
    fi
    # --nj jobs, each one process training its share of the folds one after another (imports, the store and its
    # feature cache shared; each fold still has its own stdout.log, checkpoints and resume)
    local groups=() pids=() whys=() failed=0 i=0 j cmd jlog why=""
    for k in ${selected}; do groups[i % nj]+="${groups[i % nj]:+,}${k}"; i=$((i + 1)); done
    for j in "${!groups[@]}"; do
        jlog="${expdir}/train_job$((j + 1)).log"
        log "Stage 2: train ${m} fold(s) ${groups[j]}, ${dump_dir} + data/folds/${protocol}/fold<k> -> ${expdir}/fold<k> (logs: ${expdir}/fold<k>/stdout.log)"
        cmd=("${launcher[@]}" --folds "${groups[j]}" "${train_config}" "${recipe_conf[@]}" "${data_conf[@]}"
            --conf "${conf}" --fold_dir="data/folds/${protocol}/fold{fold}" --store_dir="${dump_dir}"
            --output_folder="${expdir}/fold{fold}" --device="${device}" --force="${force}" --replay_script "${replay}")
        # shellcheck disable=SC2206
        cmd+=(${train_args} "${extra_args[@]}" "$@")
        start_log "${jlog}" "${cmd[@]}"
        "${cmd[@]}" 3>&2 < /dev/null >> "${jlog}" 2>&1 &
        pids+=($!)
    done
    for j in "${!pids[@]}"; do wait "${pids[j]}" || true; done  # each fold's outcome is judged below
    j=0
    for k in ${selected}; do
        flog="${expdir}/fold${k}/stdout.log"
        jlog="${expdir}/train_job$((j % nj + 1)).log"; j=$((j + 1))
        if [ ! -f "${flog}" ]; then  # the job died before this fold started
            why="stage 2 (${m} fold ${k}) failed: $(last_error "${jlog}") (log: ${jlog})"
        elif last_run "${flog}" | grep -q '^error: ' || [ ! -f "${expdir}/fold${k}/test_results.json" ]; then
            why="stage 2 (${m} fold ${k}) failed: $(last_error "${flog}") (log: ${flog})"
        else
            show_warnings "${flog}"  # its scores are in the job's "fold k done" line
            continue
        fi
        failed=$((failed + 1))
        whys+=("${why}")
    done
    rm -f "${replay}"
    [ "${failed}" -ne 1 ] || die "${whys[0]}"
    for why in "${whys[@]}"; do log "${why}"; done
    [ "${failed}" -eq 0 ] || die "${failed} fold(s) of ${expdir} failed (see above)"
}

score_exp() {  # score_exp <expdir>
    local n
    n=$(find "data/folds/${protocol}" -maxdepth 1 -name 'fold*' -type d | wc -l)
    log "Stage 3: score, $1/fold*/predictions.csv -> $1/results.{json,md} + RESULTS.md (log: $1/score.log)"
    [ -d "$1" ] || die "stage 3: no experiment $1; run stage 2 first"
    run_logged "$1/score.log" "stage 3 (scoring $1)" "${python}" -m cta_rnn.score --exp "$1" --recipe_root .
    [ "$(fold_list | wc -l)" -lt "${n}" ] && log "note: scored a subset of folds (--folds ${folds})"
    return 0
}

expname() { echo "${1}_${encoder}_${protocol}${tag:+_${tag}}${suffix:+_${suffix}}"; }

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
    stage_begin 0
    log "Stage 0: data prep, ${corpus_root:-<generated>} -> data/manifest.csv, data/folds/${protocol} (log: data/prep.log)"
    [ -x local/data_prep.sh ] || die "local/data_prep.sh missing in $(pwd)"
    # shellcheck disable=SC2086
    run_logged data/prep.log "stage 0 (data prep)" local/data_prep.sh "${corpus_root}" data ${prep_opts}
    [ -f data/manifest.csv ] || die "data prep wrote no data/manifest.csv"
    [ -d "data/folds/${protocol}" ] || die "data prep wrote no data/folds/${protocol}"
    stage_end
fi

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
    stage_begin 1
    log "Stage 1: embedding dump, data/manifest.csv -> ${dump_dir} (encoder ${encoder_yaml}; log: ${dump_dir}.log)"
    [ -f data/manifest.csv ] || die "stage 1 needs data/manifest.csv: run stage 0 first"
    fopt=(); [ "${force}" = true ] && fopt=(--force)
    # shellcheck disable=SC2086
    run_logged "${dump_dir}.log" "stage 1 (dump)" "${python}" -m cta_rnn.dump --manifest data/manifest.csv \
        --encoder "${encoder_yaml}" --out "${dump_dir}" --device "${device}" ${dump_opts} "${fopt[@]}" ${encoder_opts}
    stage_end
fi

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
    stage_begin 2
    train_folds "${model}" "exp/$(expname "${model}")"
    stage_end
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
    stage_begin 3
    score_exp "exp/$(expname "${model}")"
    stage_end
fi

if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
    stage_begin 4
    ablated=()
    for m in ${ablations}; do
        log "Stage 4: ablation ${m}"
        train_folds "${m}" "exp/$(expname "${m}")"
        score_exp "exp/$(expname "${m}")"
        ablated+=("exp/$(expname "${m}")")
    done
    if [ "${#ablated[@]}" -gt 0 ]; then
        ref="exp/$(expname "${model}")"
        [ -f "${ref}/results.json" ] || die "stage 4 compares with ${ref}: run stages 2-3 first"
        out="exp/ablations_${encoder}_${protocol}${suffix:+_${suffix}}"
        log "Stage 4: per-fold paired differences to ${model} -> ${out}.md"
        run_logged "${out}.log" "stage 4 (paired comparison)" "${python}" -m cta_rnn.score --no_results_md \
            --paired "${ref}" "${ablated[@]}" --paired_out "${out}" --paired_metric "${paired_metric}"
    fi
    if [ -n "${sweep_layers}" ]; then
        sweep=()
        for l in ${sweep_layers}; do
            log "Stage 4: single-layer sweep, layer ${l}"
            train_folds single_layer "exp/$(expname "single_layer${l}")" "--layers=[${l}]"
            score_exp "exp/$(expname "single_layer${l}")"
            sweep+=("${l}=exp/$(expname "single_layer${l}")")
        done
        out="exp/layer_sweep_${encoder}_${protocol}${suffix:+_${suffix}}"
        run_logged "${out}.log" "stage 4 (layer sweep)" "${python}" -m cta_rnn.score --no_results_md \
            --sweep "${sweep[@]}" --sweep_png "${out}.png"
    fi
    stage_end
fi

if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
    stage_begin 5
    # Hyperparameter search on validation data only: every point of hparams/tune.yaml on the same folds,
    # selected by mean validation UA over folds; the chosen point's test UA is reported once.
    tune_yaml="$(find_conf "" tune)"
    tune_yaml="${tune_yaml//\/\//\/}"
    fold_list > /dev/null
    check_store
    tune_conf=(--conf "$(find_conf model "${model}")")
    [ -f data/train_overrides.yaml ] && tune_conf=(--conf data/train_overrides.yaml "${tune_conf[@]}")
    log "Stage 5: checking every point of ${tune_yaml} before training the first"
    # shellcheck disable=SC2086
    points=$(py_query "${python}" -m cta_rnn.tune points "${tune_yaml}" --train_yaml "${train_config}" \
        --store "${dump_dir}" -- "${recipe_conf[@]}" "${tune_conf[@]}" ${train_args} "${extra_args[@]}")
    tuned=()
    while IFS=$'\t' read -r -a fields; do  # <tag> TAB <override> TAB ... (no globbing, spaces kept)
        [ "${#fields[@]}" -gt 0 ] || continue
        point="${fields[0]}"
        log "Stage 5: tune ${point}: ${fields[*]:1}"
        train_folds "${model}" "exp/$(expname "${model}")_tune_${point}" "${fields[@]:1}"
        tuned+=("exp/$(expname "${model}")_tune_${point}")
    done <<< "${points}"
    out="exp/tune_$(expname "${model}")"
    run_logged "${out}.log" "stage 5 (tune selection)" "${python}" -m cta_rnn.tune select --out "${out}" "${tuned[@]}"
    stage_end
fi
log "done (stages ${stage}-${stop_stage}): ${timings:-nothing to run}"
