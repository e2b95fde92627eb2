#!/usr/bin/env bash
# ESPnet-style option parsing: every variable defined before sourcing this file can be set with
# --name value or --name=value (dashes in names are read as underscores). Unknown options fail loudly.
# Everything after a bare "--" is kept in the array extra_args (hyperpyyaml overrides for training).
# --help prints the variables and their current values.

extra_args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --help|-h)
            echo "Usage: $0 [--name value ...] [-- --hparam=value ...]"
            echo "Training overrides (after -- and in --train_args) are checked against cta_rnn/hparams_schema.py"
            echo "and name the experiment folder (e.g. exp/cta_rnn_<encoder>_<protocol>_lr0.0005)."
            echo "Options (current values):"
            for v in ${__option_names:-}; do printf '  --%-18s %s\n' "$v" "${!v}"; done
            exit 0 ;;
        --)
            shift; extra_args=("$@"); break ;;
        --*=*)
            name="${1%%=*}"; name="${name#--}"; name="${name//-/_}"; value="${1#*=}"; shift ;;
        --*)
            name="${1#--}"; name="${name//-/_}"
            if [ $# -lt 2 ]; then echo "$0: option --${name} needs a value" >&2; exit 1; fi
            value="$2"; shift 2 ;;
        *)
            echo "$0: unexpected argument '$1' (options are --name value; hparam overrides go after --)" >&2
            exit 1 ;;
    esac
    if ! declare -p "${name}" >/dev/null 2>&1 || [[ " ${__option_names:-} " != *" ${name} "* ]]; then
        echo "$0: unknown option --${name} (see --help)" >&2
        exit 1
    fi
    printf -v "${name}" '%s' "${value}"
done
