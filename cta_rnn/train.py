"""Stage 2: train and test one fold of a layer-wise SER model on a dumped embedding store.

    python -m cta_rnn.train recipes/shared/hparams/train.yaml --fold_dir=data/folds/loso_speaker/fold1 \
        --store_dir=dump/whisper_tiny_en --output_folder=exp/cta_rnn_whisper_tiny_en_loso_speaker/fold1 \
        [--conf hparams/model/no_channel_attention.yaml ...] [--device=cuda:0] [--key=value ...]

Multi-GPU / multi-node: ``torchrun --nproc_per_node=N -m cta_rnn.train ...`` (SpeechBrain DDP).
A finished fold (``test_results.json`` present) is skipped unless ``--force=True``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import speechbrain as sb
import torch
import yaml
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import run_on_main

from cta_rnn import models
from cta_rnn.data import dataset_stats, make_datasets, make_label_encoder, read_fold, speaker_stats
from cta_rnn.io_utils import atomic_write_json
from cta_rnn.store import EmbeddingStore

logger = logging.getLogger("cta_rnn.train")


def split_conf_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``--conf FILE`` (repeatable) from the other arguments."""
    confs, rest, it = [], [], iter(argv)
    for arg in it:
        if arg == "--conf":
            confs.append(next(it))
        elif arg.startswith("--conf="):
            confs.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return confs, rest


def merge_overrides(conf_files: Sequence[str], cli_overrides: str | dict | None) -> dict[str, Any]:
    """Override files in order, then command-line overrides; nested dicts (model_kwargs) merge key by key."""
    merged: dict[str, Any] = {}

    def update(dst: dict, src: dict) -> None:
        for k, v in src.items():
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                update(dst[k], v)
            else:
                dst[k] = v

    for path in conf_files:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: override YAML not found")
        update(merged, yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {})
    if cli_overrides:
        update(merged, yaml.safe_load(cli_overrides) if isinstance(cli_overrides, str) else cli_overrides)
    return merged


def build_model(hparams: dict[str, Any], num_layers: int, dim: int) -> torch.nn.Module:
    """Instantiate ``model_class`` from cta_rnn.models with the store's shape."""
    cls = getattr(models, hparams["model_class"], None)
    if cls is None:
        raise ValueError(f"unknown model_class {hparams['model_class']!r}: use CTARNN, RNNMeanPool or WeightedSumPool")
    kwargs = dict(hparams.get("model_kwargs") or {})
    if cls is models.WeightedSumPool:
        kwargs = {k: v for k, v in kwargs.items() if k in ("proj_dim",)}
    normalize = hparams.get("normalization", "global") != "none"
    return cls(num_layers, dim, len(hparams["labels"]), normalize=normalize, **kwargs)


def model_spec(hparams: dict[str, Any], store: EmbeddingStore) -> dict[str, Any]:
    """What rebuilds the trained model without the training YAML (see cta_rnn.checkpoint.load_fold_model)."""
    return {
        "model_class": hparams["model_class"],
        "model_kwargs": dict(hparams.get("model_kwargs") or {}),
        "normalization": hparams["normalization"],
        "labels": list(hparams["labels"]),
        "layers": list(store.layers),
        "num_layers": store.num_layers,
        "dim": store.dim,
        "frame_rate": store.frame_rate,
        "encoder": store.meta.get("encoder"),
    }


def class_weights(train_labels: Sequence[str], labels: Sequence[str]) -> torch.Tensor:
    """Inverse-frequency weights, normalised to mean 1."""
    counts = torch.tensor([max(1, list(train_labels).count(lab)) for lab in labels], dtype=torch.float)
    w = counts.sum() / counts
    return w / w.mean()


def loader_kwargs(hparams: dict[str, Any], datasets: dict, labels_of_train: Sequence[str]) -> dict[str, Any]:
    """Training DataLoader options: shuffled, sorted by length, or class-balanced sampling."""
    kw: dict[str, Any] = {"batch_size": hparams["batch_size"], "num_workers": hparams["num_workers"]}
    if hparams.get("balanced_sampling"):
        from speechbrain.dataio.sampler import ReproducibleWeightedRandomSampler

        counts = {lab: list(labels_of_train).count(lab) for lab in set(labels_of_train)}
        weights = [1.0 / counts[lab] for lab in labels_of_train]
        kw["sampler"] = ReproducibleWeightedRandomSampler(weights, num_samples=len(weights), seed=hparams["seed"])
    elif hparams.get("sorting", "random") == "random":
        kw["shuffle"] = True
    else:
        reverse = hparams["sorting"] == "descending"
        datasets["train"] = datasets["train"].filtered_sorted(sort_key="duration", reverse=reverse)
    return kw


def run_fold(hparams_file: str, run_opts: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any] | None:
    """Train, select the best epoch by validation UA, test; returns the test scores (None when skipped)."""
    with open(hparams_file, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    out = Path(hparams["output_folder"])
    results_file = out / "test_results.json"
    if results_file.exists() and not hparams.get("force", False):
        logger.info("%s exists: fold already finished, skipping (--force=True to redo)", results_file)
        return None
    sb.create_experiment_directory(experiment_directory=str(out), hyperparams_to_save=hparams_file, overrides=overrides)

    store = EmbeddingStore(hparams["store_dir"], layers=hparams.get("layers"))
    frames = read_fold(hparams["fold_dir"], store)
    labels = list(hparams["labels"])
    run_on_main(make_label_encoder, args=[labels, hparams["label_encoder_file"], frames["train"]])
    label_encoder = make_label_encoder(labels, hparams["label_encoder_file"], frames["train"])

    spk = None
    if hparams["normalization"] == "speaker":
        import pandas as pd

        spk = speaker_stats(store, pd.concat(frames.values()), hparams["stats_max_utterances"] // 10 or 1)
        if sb.utils.distributed.if_main_process():  # "average training speaker": inference without speaker stats
            train_spk = sorted(set(frames["train"]["speaker"].astype(str)))
            fallback = {k: torch.stack([spk[s][i] for s in train_spk]).mean(0) for i, k in enumerate(("mean", "std"))}
            out.mkdir(parents=True, exist_ok=True)
            torch.save(fallback, out / "speaker_norm_fallback.pt")
    model = build_model(hparams, store.num_layers, store.dim)
    if hparams["normalization"] != "none":
        spk_of = dict(zip(frames["train"]["ID"], frames["train"]["speaker"].astype(str)))
        mean, std = dataset_stats(
            store, frames["train"]["ID"], hparams["stats_max_utterances"], spk_of, spk, hparams["seed"]
        )
        model.normalizer.set_stats(mean, std)
    if hparams["class_weighting"] == "inverse":
        hparams["class_weights"] = class_weights(frames["train"]["emotion"].astype(str).tolist(), labels)
    hparams["layer_ids"] = store.layers
    if sb.utils.distributed.if_main_process():
        atomic_write_json(out / "model.json", model_spec(hparams, store))

    max_frames = None
    if hparams.get("max_train_seconds"):
        max_frames = int(round(hparams["max_train_seconds"] * store.frame_rate))
    datasets = make_datasets(frames, store, label_encoder, max_frames, spk)
    train_kw = loader_kwargs(hparams, datasets, frames["train"]["emotion"].astype(str).tolist())
    eval_kw = {"batch_size": hparams["eval_batch_size"], "num_workers": hparams["num_workers"]}

    from cta_rnn.brain import EmotionBrain, remove_torn_checkpoints

    if sb.utils.distributed.if_main_process():
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
    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=train_kw,
        valid_loader_kwargs=eval_kw,
    )
    brain.evaluate(datasets["test"], max_key="UA", test_loader_kwargs=eval_kw)
    best = checkpointer.find_checkpoint(max_key="UA")
    result = {
        "test": brain.test_stats,
        "best_epoch": best.meta.get("epoch") if best else None,
        "valid_UA": best.meta.get("UA") if best else None,
        "epochs_run": brain.hparams.epoch_counter.current,
        "layers": store.layers,
        "encoder": store.meta.get("encoder"),
        "n": {k: len(v) for k, v in frames.items()},
    }
    if sb.utils.distributed.if_main_process():
        atomic_write_json(results_file, result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m cta_rnn.train`` / ``cta-rnn train``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    confs, rest = split_conf_args(list(sys.argv[1:] if argv is None else argv))
    hparams_file, run_opts, cli_overrides = sb.parse_arguments(rest)
    overrides = merge_overrides(confs, cli_overrides)
    sb.utils.distributed.ddp_init_group(run_opts)
    run_fold(hparams_file, run_opts, overrides)
    return 0


if __name__ == "__main__":
    sys.exit(main())
