#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment at <repo>/.venv from tools/requirements.lock.
# Quick no-op when .venv already matches the lock file and setup.py.
#   tools/install.sh            install / check
#   tools/install.sh --force    reinstall everything from the lock
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${CTA_RNN_VENV:-${root}/.venv}"
lock="${root}/tools/requirements.lock"
uv_version="0.13.9"
python="${PYTHON:-python3}"
force=false
[ "${1:-}" = "--force" ] && force=true

log() { echo "[install] $*" >&2; }

stamp="${venv}/.cta_rnn_install"
want="$(cat "${lock}" "${root}/setup.py" | sha256sum | cut -d' ' -f1)"
if ! ${force} && [ -f "${stamp}" ] && [ "$(cat "${stamp}")" = "${want}" ] \
        && "${venv}/bin/python" -c "import cta_rnn" 2>/dev/null; then
    log "environment up to date: ${venv}"
    exit 0
fi

if [ ! -x "${venv}/bin/python" ]; then
    log "creating ${venv} with $(${python} --version 2>&1)"
    "${python}" -m venv "${venv}"
fi
vpy="${venv}/bin/python"

# uv ignores pip's configuration: hand it the same local wheel folders and indexes.
index_args=()
while IFS= read -r line; do
    key="${line%%=*}"; key="${key#*.}"; value="${line#*=}"; value="${value//\'/}"
    case "${key}" in
        find-links)       for v in ${value}; do index_args+=(--find-links "${v}"); done ;;
        index-url)        index_args+=(--index-url "${value}") ;;
        extra-index-url)  for v in ${value}; do index_args+=(--extra-index-url "${v}"); done ;;
    esac
done < <("${vpy}" -m pip config list 2>/dev/null || true)

start=$(date +%s)
if "${vpy}" -m pip install -q --disable-pip-version-check "uv==${uv_version}" >/dev/null 2>&1; then
    log "installing from ${lock##*/} with uv"
    "${venv}/bin/uv" pip install --python "${vpy}" --index-strategy unsafe-best-match \
        "${index_args[@]}" -r "${lock}"
    "${venv}/bin/uv" pip install --python "${vpy}" --no-deps --no-build-isolation -e "${root}"
else
    log "uv unavailable: falling back to pip (slower)"
    "${vpy}" -m pip install -q --disable-pip-version-check -r "${lock}"
    "${vpy}" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "${root}"
fi
"${vpy}" -c "import torch, torchaudio, speechbrain, transformers, soundfile, cta_rnn" \
    || { log "import check failed"; exit 1; }
tmp="$(mktemp "${venv}/.stamp.XXXXXX")"; echo "${want}" > "${tmp}"; mv "${tmp}" "${stamp}"
log "done in $(( $(date +%s) - start )) s: ${venv}"
