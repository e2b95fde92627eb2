"""Stage 2: train and test one fold of a layer-wise SER model on a dumped embedding store.

    python -m cta_rnn.train recipes/shared/hparams/train.yaml --fold_dir=data/folds/loso_speaker/fold1 \
        --store_dir=dump/whisper_tiny_en --output_folder=exp/cta_rnn_whisper_tiny_en_loso_speaker/fold1 \
        [--conf hparams/model/no_channel_attention.yaml ...] [--device=cuda:0] [--key=value ...]

Multi-GPU / multi-node: ``torchrun --nproc_per_node=N -m cta_rnn.train ...`` (SpeechBrain DDP).

A run does what its command line says or refuses with one line (``error: ...``, exit status 1):
- every override is checked against :data:`cta_rnn.hparams_schema.SCHEMA` before anything runs;
- the fold folder is locked (``fcntl.flock`` on ``<fold>/.lock``) while it trains: a second training of
  the same fold is refused, naming the holder's pid;
- ``run_config.json`` records what a fold's run is: its hyperparameters, its fold data (a digest of the ID,
  emotion and speaker columns of train/valid/test.csv) and its store's identity (encoder, layers, manifest
  checksum), not where they lie (a copied or moved repository keeps its finished folds). A finished fold is
  skipped, and a killed one resumed, only when all of it is the same (what differs is named otherwise);
- ``--force=True`` removes the fold's previous run (checkpoints included) and trains it from scratch;
- ``--replay_script FILE`` is copied to the experiment's ``run.sh`` only when training really starts (model built).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import logging
import os
import shlex
import shutil
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process, run_on_main

from cta_rnn import device as device_mod
from cta_rnn import progress
from cta_rnn.artifacts import (
    ENCODER_IDENTITY_KEYS,
    PREDICTIONS,
    STORE_IDENTITY_KEYS,
    ensure_label_encoder,
    read_predictions,
    read_splits,
    read_store_meta,
    read_test_results,
    write_model_spec,
    write_test_results,
)
from cta_rnn.brain import EmotionBrain, remove_torn_checkpoints
from cta_rnn.checkpoint import best_checkpoints
from cta_rnn.data import (
    FOLD_DATA_COLUMNS,
    dimension_targets,
    fit_normalizer,
    fold_data_digest,
    make_loaders,
    read_fold,
)
from cta_rnn.dimensional import training_stats
from cta_rnn.feature_cache import FeatureSource
from cta_rnn.hparams_schema import (
    TASK_KEYS,
    check_overrides,
    differences,
    identity,
    load_hparams,
    merge_overrides,
    model_spec,
    plain,
    pop_option,
    resolve_select_key,
    split_conf_args,
    task_dimensions,
    yaml_keys,
)
from cta_rnn.io_utils import LockHeld, atomic_write_json, one_line, take_pid_lock
from cta_rnn.models import build_model
from cta_rnn.store import EmbeddingStore, StoreError, is_complete

logger = logging.getLogger("cta_rnn.train")


LOCK = ".lock"
RUN_CONFIG = "run_config.json"
KEEP_ON_FORCE = (LOCK, "stdout.log")
"""What ``--force`` leaves in a fold folder: the lock this run holds and the recipe driver's log of this run."""
LOCATION_KEYS = ("fold_dir", "store_dir")
"""Where a fold's data and store lie: not part of its run identity (their content is: ``fold_data``, ``store``).
Records written before this (with these keys) are still accepted: the keys are ignored when comparing."""
CONTENT_KEYS = ("fold_data", "store")
DISK_FULL_SIGNS = ("No space left", "basic_ios::clear", "file write failed", "unexpected pos")
"""How a full disk shows in torch.save's errors (its C++ writer has no errno)."""


class RunRefused(RuntimeError):
    """The fold cannot run as asked (being trained, started with other hyperparameters, disk full)."""


@contextmanager
def fold_lock(fold_dir: Path) -> Iterator[None]:
    """Hold ``<fold>/.lock`` (``fcntl.flock``) while the fold trains; a second training of it is refused.

    Only the main process locks (the ranks of one DDP run share the fold). The lock goes with the process:
    a killed training leaves the file but not the lock.
    """
    if not if_main_process():
        yield
        return
    fold_dir.mkdir(parents=True, exist_ok=True)
    path = fold_dir / LOCK
    try:
        f = take_pid_lock(path)
    except LockHeld as held:
        raise RunRefused(
            f"{fold_dir}: already being trained by pid {held.pid} (lock {path}); wait for it or stop it"
        ) from None
    with f:
        yield


def is_disk_full(err: BaseException) -> bool:
    """An error that a full disk (or quota) caused."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return any(sign in str(err) for sign in DISK_FULL_SIGNS)


@contextmanager
def disk_errors_named(folder: Path) -> Iterator[None]:
    """A full disk while the fold trains becomes one line naming its folder."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        if isinstance(err, RunRefused) or not is_disk_full(err):
            raise
        free = shutil.disk_usage(folder).free if folder.exists() else 0
        raise RunRefused(
            f"{folder}: no space left on the device ({free / 2**20:.1f} MiB free) while training; free some "
            "space and rerun: the fold resumes from its last complete checkpoint"
        ) from err


def read_run_config(fold_dir: Path) -> dict[str, Any] | None:
    """The hyperparameters a fold was started with (``run_config.json``), or None."""
    path = fold_dir / RUN_CONFIG
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def clear_fold(fold_dir: Path) -> list[str]:
    """Remove a fold's previous run (checkpoints, logs, results); returns the names removed."""
    removed = []
    for entry in sorted(fold_dir.iterdir()) if fold_dir.is_dir() else []:
        if entry.name in KEEP_ON_FORCE:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry.name)
    return removed


def store_identity(store_dir: str | os.PathLike) -> dict[str, Any]:
    """What a store is (its ``meta.json`` identity: encoder, layers, dim, frame rate, manifest checksum), not where."""
    meta = read_store_meta(store_dir)
    encoder = meta.get("encoder") or {}
    return {
        "encoder": {k: plain(encoder.get(k)) for k in ENCODER_IDENTITY_KEYS},
        **{k: plain(meta.get(k)) for k in STORE_IDENTITY_KEYS if k != "encoder"},
    }


def run_identity(hparams: dict[str, Any]) -> dict[str, Any]:
    """A fold run's ``run_config.json``: its identity hyperparameters without locations, its fold data digest
    (:func:`cta_rnn.data.fold_data_digest`) and its store's identity."""
    record = {k: v for k, v in identity(hparams).items() if k not in LOCATION_KEYS}
    if hparams.get("task", "categorical") == "categorical":  # as recorded before the task existed
        for key in TASK_KEYS:
            record.pop(key, None)
    record["fold_data"] = fold_data_digest(hparams["fold_dir"], task_dimensions(hparams))
    record["store"] = store_identity(hparams["store_dir"])
    return record


def relabelled(out: Path, fold_dir: str | os.PathLike) -> tuple[int, int] | None:
    """How many utterances of a finished fold's predictions.csv now have another label in test.csv, of how many."""
    if not (out / PREDICTIONS).is_file():
        return None
    try:
        pred = read_predictions(out)
        test = read_splits(fold_dir)["test"]
    except (OSError, ValueError):
        return None
    both = pred[["ID", "true"]].merge(test[["ID", "emotion"]].astype(str), on="ID")
    return int((both["true"] != both["emotion"]).sum()), len(both)


def fold_data_changes(old: Any, new: dict[str, Any], out: Path, fold_dir: str | os.PathLike) -> list[str]:
    """``fold data: <split>.csv changed (columns; rows)`` for each split file whose content differs from the record."""
    if not isinstance(old, dict):
        return []
    changes = []
    for name, now in new.items():
        was = old.get(name)
        if was == now:
            continue
        if not isinstance(was, dict):
            changes.append(f"fold data: {name} changed")
            continue
        details = [c for c in FOLD_DATA_COLUMNS if was.get(c) != now.get(c)]
        if was.get("rows") != now.get("rows"):
            details.append(f"{was.get('rows')} -> {now.get('rows')} rows")
        elif name == "test.csv" and details == ["emotion"] and (count := relabelled(out, fold_dir)) is not None:
            details = [f"{count[0]} of {count[1]} labels differ from {PREDICTIONS}"]
        changes.append(f"fold data: {name} changed ({', '.join(details)})")
    return changes


def store_changes(old: Any, new: dict[str, Any]) -> list[str]:
    """``store: <key> old -> new`` for each store identity key that differs from the record."""
    if not isinstance(old, dict):
        return []

    def flat(record: dict[str, Any]) -> dict[str, Any]:
        encoder = record.get("encoder") if isinstance(record.get("encoder"), dict) else {}
        return {
            **{f"encoder.{k}": v for k, v in encoder.items()},
            **{k: v for k, v in record.items() if k != "encoder"},
        }

    return [f"store: {item}" for item in differences(flat(old), flat(new))]


def run_differences(
    old: dict[str, Any], new: dict[str, Any], out: Path, fold_dir: str | os.PathLike
) -> dict[str, list[str]]:
    """What differs between a fold's recorded run identity and this run's, by kind ('hyperparameters', 'fold data',
    'store'; only kinds with a difference). Locations are ignored, also in records that hold them."""
    ignored = LOCATION_KEYS + CONTENT_KEYS
    found = {
        "hyperparameters": differences(
            {k: v for k, v in old.items() if k not in ignored}, {k: v for k, v in new.items() if k not in ignored}
        ),
        "fold data": fold_data_changes(old.get("fold_data"), new["fold_data"], out, fold_dir),
        "store": store_changes(old.get("store"), new["store"]),
    }
    return {kind: items for kind, items in found.items() if items}


def claim_fold(fold_dir: Path, hparams: dict[str, Any]) -> None:
    """Make the fold folder fit this run (main process, under the lock): ``--force`` clears it; otherwise a run
    made with other hyperparameters, fold data or store is refused, naming what differs. Records ``run_config.json``."""
    record = run_identity(hparams)
    finished = read_test_results(fold_dir) is not None
    if hparams.get("force"):
        removed = clear_fold(fold_dir)
        if removed:
            logger.info("%s: --force: removed the previous run (%s)", fold_dir, ", ".join(removed))
        finished = False
    else:
        old = read_run_config(fold_dir)
        diff = run_differences(old, record, fold_dir, hparams["fold_dir"]) if old is not None else {}
        if diff:
            state = "finished" if finished else "unfinished"
            items = "; ".join(item for kind in diff.values() for item in kind)
            raise RunRefused(
                f"{fold_dir}: its {state} run used other {' and '.join(diff)} ({items}); --force=true "
                "trains it afresh, or train into another folder"
            )
        if old is None and (fold_dir / "save").is_dir() and not finished:
            logger.warning("%s: resuming a run that did not record its hyperparameters (%s)", fold_dir, RUN_CONFIG)
        unchecked = ["hyperparameters", *CONTENT_KEYS] if old is None else [k for k in CONTENT_KEYS if k not in old]
        if finished and unchecked:
            logger.warning(
                "%s: its %s (%s) does not record its %s: not compared (--force=true retrains it)",
                fold_dir,
                RUN_CONFIG,
                "missing" if old is None else "written by an older version",
                ", ".join(k.replace("_", " ") for k in unchecked),
            )
    if not finished:
        atomic_write_json(fold_dir / RUN_CONFIG, record)


def install_replay(script: str | None, exp_dir: Path) -> None:
    """Copy the recipe driver's replay script to ``<experiment>/run.sh``, now that training starts."""
    if not script or not if_main_process():
        return
    if not Path(script).is_file():
        logger.warning("replay script %s not found; %s not written", script, exp_dir / "run.sh")
        return
    tmp = exp_dir / f".run.sh.{os.getpid()}.tmp"
    shutil.copyfile(script, tmp)
    tmp.chmod(0o755)
    os.replace(tmp, exp_dir / "run.sh")


def class_weights(train_labels: Sequence[str], labels: Sequence[str]) -> torch.Tensor:
    """Inverse-frequency weights, normalised to mean 1."""
    counts = torch.tensor([max(1, list(train_labels).count(lab)) for lab in labels], dtype=torch.float)
    w = counts.sum() / counts
    return w / w.mean()


def training_device(run_opts: dict[str, Any]) -> torch.device:
    """The device this process trains on: ``run_opts["device"]`` resolved for this machine and torchrun rank
    (:func:`cta_rnn.device.resolve_device`; no ``--device``: this process's GPU if there is one, else the CPU)."""
    return device_mod.resolve_device(run_opts.get("device"), device_mod.facts())


def with_device(run_opts: Any, device: str) -> Any:
    """``run_opts`` (SpeechBrain's frozen RunOptions, or a dict) with ``device`` set."""
    if isinstance(run_opts, dict):
        return {**run_opts, "device": device}
    return dataclasses.replace(run_opts, device=device)


def rank_and_world() -> tuple[int, int]:
    """This process's DDP rank and the world size (0, 1 without DDP)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def prepare_model(
    hparams: dict[str, Any], store: EmbeddingStore, source: FeatureSource, splits: dict
) -> torch.nn.Module:
    """The untrained model with its normaliser fitted on this fold; ``model.json`` written."""
    spec = model_spec(hparams, store)
    if spec.get("dimensions"):
        where = Path(hparams["fold_dir"]) / "train.csv"
        spec["dimension_stats"] = training_stats(
            dimension_targets(splits["train"], spec["dimensions"], where), spec["dimensions"], str(where)
        )
    model = build_model(spec).to(source.device)
    fit_normalizer(model.normalizer, source, splits, hparams["stats_max_utterances"], hparams["seed"])
    if if_main_process():
        write_model_spec(hparams["output_folder"], spec)
    return model


def train_and_test(
    hparams: dict[str, Any], run_opts: dict[str, Any], model: torch.nn.Module, loaders: dict
) -> dict[str, Any]:
    """Fit keeping the best checkpoints by validation UA, then score the tested model (the best checkpoint, or the
    average of the ``average_checkpoints`` best) on validation and test; returns the scores and epochs."""
    if if_main_process():
        for name in remove_torn_checkpoints(hparams["save_folder"]):
            logger.warning("removed checkpoint %s: its save was interrupted (incomplete files)", name)
    sb.utils.distributed.ddp_barrier()
    checkpointer = sb.utils.checkpoints.Checkpointer(
        hparams["save_folder"], recoverables={"model": model, "counter": hparams["epoch_counter"]}
    )
    brain = EmotionBrain(
        modules={"model": model},
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=checkpointer,
    )
    brain.train_batches = loaders["train"].dataset
    start = time.perf_counter()
    brain.fit(brain.hparams.epoch_counter, loaders["train"], loaders["valid"])
    epochs_run = brain.hparams.epoch_counter.current
    key = brain.select_key
    chosen = best_checkpoints(checkpointer, brain.averaged, key)
    if brain.averaged > 1 and len(chosen) < brain.averaged:
        logger.warning(
            "%s: the tested model averages %d checkpoint(s), not the %d asked (average_checkpoints): only %d "
            "were saved (epochs run: %d)",
            hparams["output_folder"],
            len(chosen),
            brain.averaged,
            len(chosen),
            epochs_run,
        )
    brain.evaluate(loaders["valid"], max_key=key, split="valid")  # the model that is tested: best or averaged
    brain.evaluate(loaders["test"], max_key=key)
    timing = {k: round(v, 3) for k, v in brain.timing.items()}
    timing["fit_and_test_s"] = round(time.perf_counter() - start, 3)
    valid = {f"valid_{k}": brain.valid_stats[k] for k in ("UA", "CCC") if k in brain.valid_stats}
    return {
        "timing": timing,
        "test": brain.test_stats,
        "best_epoch": chosen[0].meta.get("epoch") if chosen else None,
        "averaged_epochs": sorted(c.meta.get("epoch") for c in chosen),
        **valid,
        **(
            {"select_by": key, "valid_dimensions": brain.valid_stats["dimensions"]}
            if "CCC" in brain.valid_stats
            else {}
        ),
        "epochs_run": epochs_run,
    }


def run_fold(
    hparams_file: str, run_opts: dict[str, Any], overrides: dict[str, Any], replay_script: str | None = None
) -> dict[str, Any] | None:
    """Train, select the best epoch by validation UA, test; returns the test scores (None when skipped)."""
    hparams = load_hparams(hparams_file, overrides)
    out = Path(hparams["output_folder"])
    if not is_complete(hparams["store_dir"]):
        raise FileNotFoundError(f"{hparams['store_dir']}: not a finished embedding store; run stage 1 (the dump) first")
    with fold_lock(out), disk_errors_named(out):
        if if_main_process():
            claim_fold(out, hparams)
        sb.utils.distributed.ddp_barrier()
        if read_test_results(out) is not None:
            logger.info("%s: fold already finished, skipping (--force=true retrains it)", out)
            return None
        return _train_fold(hparams_file, run_opts, overrides, hparams, replay_script)


_SOURCE: dict[tuple, FeatureSource] = {}
"""The last fold's feature cache: the next fold of the same process reuses it when it needs the same features."""


def shared_source(
    store: EmbeddingStore, ids: Sequence[str], device: torch.device, mode: str, num_workers: int, batch_size: int
) -> FeatureSource:
    """A :class:`FeatureSource` for ``ids``, shared by the folds one process trains (the store read once)."""
    key = (str(store.root.resolve()), tuple(store.layers), frozenset(ids), str(device), mode, num_workers)
    if key not in _SOURCE:
        for old in _SOURCE.values():
            old.release()
        _SOURCE.clear()
        _SOURCE[key] = FeatureSource(store, ids, device, mode, num_workers, batch_size)
    return _SOURCE[key]


def _train_fold(
    hparams_file: str,
    run_opts: dict[str, Any],
    overrides: dict[str, Any],
    hparams: dict[str, Any],
    replay_script: str | None = None,
) -> dict[str, Any]:
    """The training of a claimed fold: experiment folder, data, model (then the replay script), fit, test."""
    start = time.perf_counter()
    out = Path(hparams["output_folder"])
    sb.create_experiment_directory(experiment_directory=str(out), hyperparams_to_save=hparams_file, overrides=overrides)
    store = EmbeddingStore(hparams["store_dir"], layers=hparams.get("layers"))
    splits = read_fold(hparams["fold_dir"], store)
    labels = list(hparams["labels"])
    run_on_main(ensure_label_encoder, args=[hparams["label_encoder_file"], labels, splits["train"]["emotion"]])
    device = training_device(run_opts)
    ids = [u for df in splits.values() for u in df["ID"]]
    largest = max(hparams["batch_size"], hparams.get("eval_batch_size") or hparams["batch_size"])
    source = shared_source(store, ids, device, hparams.get("cache", "auto"), hparams["num_workers"], largest)
    model = prepare_model(hparams, store, source, splits)
    install_replay(replay_script, out.parent)
    if hparams["class_weighting"] == "inverse":
        hparams["class_weights"] = class_weights(splits["train"]["emotion"].astype(str).tolist(), labels)
    hparams["layer_ids"] = store.layers
    hparams["select_key"] = resolve_select_key(hparams)
    crop = int(round(hparams["max_train_seconds"] * store.frame_rate)) if hparams.get("max_train_seconds") else None
    rank, world = rank_and_world()
    loaders = make_loaders(
        source,
        splits,
        labels,
        model.normalizer,
        batch_size=hparams["batch_size"],
        eval_batch_size=hparams["eval_batch_size"],
        seed=hparams["seed"],
        sorting="balanced" if hparams.get("balanced_sampling") else hparams.get("sorting", "random"),
        crop=crop,
        rank=rank,
        world_size=world,
        dimensions=task_dimensions(hparams),
    )
    result = train_and_test(hparams, run_opts, model, loaders)
    result.update(layers=store.layers, encoder=store.meta.get("encoder"), n={k: len(v) for k, v in splits.items()})
    result["timing"]["fold_s"] = round(time.perf_counter() - start, 3)
    if if_main_process():
        write_test_results(out, result)
    return result


FOLD_KEY = "{fold}"
"""Placeholder in the arguments of ``--folds``: replaced by each fold's number (``--fold_dir=.../fold{fold}``)."""


def train_once(argv: Sequence[str]) -> dict[str, Any] | None:
    """One fold from its command line (``--conf``, ``--replay_script``, SpeechBrain arguments and overrides); its
    results, or None when it had already finished (skipped)."""
    confs, rest = split_conf_args(argv)
    replay, rest = pop_option(rest, "replay_script")
    hparams_file, run_opts, cli_overrides = sb.parse_arguments(rest)
    overrides = merge_overrides(confs, cli_overrides)
    check_overrides(overrides, yaml_keys(hparams_file))
    run_opts = with_device(run_opts, str(training_device(run_opts)))  # SpeechBrain and the cache: one device
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        sb.utils.distributed.ddp_init_group(run_opts)
    return run_fold(hparams_file, run_opts, overrides, replay[-1] if replay else None)


def fold_argv(argv: Sequence[str], fold: int) -> list[str]:
    """The arguments of one fold of ``--folds``: every ``{fold}`` replaced by its number."""
    return [a.replace(FOLD_KEY, str(fold)) for a in argv]


def output_folder(argv: Sequence[str]) -> Path | None:
    """The ``--output_folder`` of a command line (None when absent)."""
    values, _ = pop_option(argv, "output_folder")
    return Path(values[-1]) if values else None


@contextmanager
def output_to(log: Path | None, argv: Sequence[str]) -> Iterator[None]:
    """stdout and stderr (file descriptors 1 and 2, so Python logging and C libraries alike) appended to ``log``
    with a header naming the command, as the stage driver does for a process per fold; restored afterwards."""
    if log is None:
        yield
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"=== {datetime.now():%Y-%m-%d %H:%M:%S} {sys.executable} -m cta_rnn.train {shlex.join(argv)}\n")
        f.flush()
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def train_folds(folds: Sequence[int], argv: Sequence[str]) -> int:
    """Several folds one after another in this process (imports, the store and its cache shared): each fold's
    output goes to its ``stdout.log``, a line per finished or failed fold to the console; returns the failures.

    A kill resumes per fold as with a process per fold: finished folds are skipped, a killed one resumes.
    """
    failed = 0
    start = time.perf_counter()
    for n, fold in enumerate(folds, 1):
        args = fold_argv(argv, fold)
        out = output_folder(args)
        t0 = time.perf_counter()
        try:
            with output_to(out / "stdout.log" if out else None, args):
                try:
                    trained = train_once(args)
                except (RunRefused, StoreError, OSError, ValueError) as err:  # HparamsError is a ValueError
                    logger.debug("refused", exc_info=True)
                    print(f"error: {one_line(err)}", file=sys.stderr)
                    raise
                except Exception:  # a bug or a broken YAML object: its traceback into this fold's log
                    traceback.print_exc()
                    raise
        except Exception as err:  # the next fold still trains; the status says one failed
            failed += 1
            progress.say(f"    fold {fold} failed: {one_line(err)} (log: {out / 'stdout.log' if out else 'stderr'})")
            continue
        done = read_test_results(out) if out else None
        scores = [f"test {k} {done['test'][k]:.3f}" for k in ("UA", "CCC") if done and k in done["test"]]
        ua = "".join(f"{x}, " for x in scores)
        state = "done" if trained is not None else "already finished (skipped; --force=true retrains it)"
        progress.say(
            f"    fold {fold} {state}: {ua}{time.perf_counter() - t0:.0f} s ({n}/{len(folds)} of this job, "
            f"{time.perf_counter() - start:.0f} s)"
        )
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m cta_rnn.train`` / ``cta-rnn train``; a refused run is one line, status 1.

    ``--folds 1,3,5`` trains those folds one after another in this process, ``{fold}`` in the other arguments
    standing for each fold's number (the stage driver's ``--nj`` jobs).
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.raiseExceptions = False  # a log file on a full disk must not print a traceback per log line
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        folds, args = pop_option(args, "folds")
        if folds:
            numbers = [int(k) for k in ",".join(folds).replace(" ", ",").split(",") if k]
            return 1 if train_folds(numbers, args) else 0
        train_once(args)
    except (RunRefused, StoreError, OSError, ValueError) as err:  # HparamsError is a ValueError
        logger.debug("refused", exc_info=True)  # the traceback goes to the fold's log.txt once it exists
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
