"""Stage 2: train and test one fold of a layer-wise SER model on a dumped embedding store.

    python -m cta_rnn.train recipes/shared/hparams/train.yaml --fold_dir=data/folds/loso_speaker/fold1 \
        --store_dir=dump/whisper_tiny_en --output_folder=exp/cta_rnn_whisper_tiny_en_loso_speaker/fold1 \
        [--conf hparams/model/no_channel_attention.yaml ...] [--device=cuda:0] [--key=value ...]

Multi-GPU / multi-node: ``torchrun --nproc_per_node=N -m cta_rnn.train ...`` (SpeechBrain DDP).
A finished fold (``test_results.json`` present) is skipped unless ``--force=True``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import speechbrain as sb
import torch
import yaml
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process, run_on_main

from cta_rnn.artifacts import ensure_label_encoder, read_test_results, write_model_spec, write_test_results
from cta_rnn.data import fit_normalizer, make_loaders, read_fold
from cta_rnn.feature_cache import FeatureSource
from cta_rnn.models import build_model
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
    """Override files in order, then command-line overrides; nested dicts (model_kwargs) merge key by key.

    A file with ``model_kwargs_replace: True`` (a model of another family, e.g. SUPERB's WeightedSumPool)
    starts ``model_kwargs`` afresh instead of merging into the keys set before it.
    """
    merged: dict[str, Any] = {}

    def update(dst: dict, src: dict) -> None:
        if src.get("model_kwargs_replace"):
            dst["model_kwargs"] = {}
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


def model_spec(hparams: dict[str, Any], store: EmbeddingStore) -> dict[str, Any]:
    """What rebuilds the trained model without the training YAML (``model.json``, see models.build_model)."""
    return {
        "model_class": hparams["model_class"],
        "model_kwargs": dict(hparams.get("model_kwargs") or {}),
        "normalization": hparams["normalization"],
        "labels": list(hparams["labels"]),
        "layers": list(store.layers),
        "num_layers": store.num_layers,
        "dim": store.dim,
        "frame_rate": store.frame_rate,
        "max_train_seconds": hparams.get("max_train_seconds"),
        "encoder": store.meta.get("encoder"),
    }


def class_weights(train_labels: Sequence[str], labels: Sequence[str]) -> torch.Tensor:
    """Inverse-frequency weights, normalised to mean 1."""
    counts = torch.tensor([max(1, list(train_labels).count(lab)) for lab in labels], dtype=torch.float)
    w = counts.sum() / counts
    return w / w.mean()


def training_device(run_opts: dict[str, Any]) -> torch.device:
    """The device SpeechBrain trains on (under torchrun: this process's local GPU)."""
    device = str(run_opts.get("device") or "cpu")
    if device.startswith("cuda") and "LOCAL_RANK" in os.environ:
        device = f"cuda:{os.environ['LOCAL_RANK']}"
    return torch.device(device)


def rank_and_world() -> tuple[int, int]:
    """This process's DDP rank and the world size (0, 1 without DDP)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def load_hparams(hparams_file: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The training hyperparameters: the YAML with overrides applied.

    With ``model_kwargs_replace`` the model's keyword arguments are only those given after that flag.
    """
    with open(hparams_file, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    if hparams.get("model_kwargs_replace"):
        hparams["model_kwargs"] = dict(overrides.get("model_kwargs") or {})
    return hparams


def prepare_model(
    hparams: dict[str, Any], store: EmbeddingStore, source: FeatureSource, splits: dict
) -> torch.nn.Module:
    """The untrained model with its normaliser fitted on this fold; ``model.json`` written."""
    spec = model_spec(hparams, store)
    model = build_model(spec).to(source.device)
    fit_normalizer(model.normalizer, source, splits, hparams["stats_max_utterances"], hparams["seed"])
    if if_main_process():
        write_model_spec(hparams["output_folder"], spec)
    return model


def train_and_test(
    hparams: dict[str, Any], run_opts: dict[str, Any], model: torch.nn.Module, loaders: dict
) -> dict[str, Any]:
    """Fit with the best checkpoint kept by validation UA, then test it; returns test stats and checkpoint meta."""
    from cta_rnn.brain import EmotionBrain, remove_torn_checkpoints

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
    brain.fit(brain.hparams.epoch_counter, loaders["train"], loaders["valid"])
    brain.evaluate(loaders["test"], max_key="UA")
    best = checkpointer.find_checkpoint(max_key="UA")
    return {
        "test": brain.test_stats,
        "best_epoch": best.meta.get("epoch") if best else None,
        "valid_UA": best.meta.get("UA") if best else None,
        "epochs_run": brain.hparams.epoch_counter.current,
    }


def run_fold(hparams_file: str, run_opts: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any] | None:
    """Train, select the best epoch by validation UA, test; returns the test scores (None when skipped)."""
    hparams = load_hparams(hparams_file, overrides)
    out = Path(hparams["output_folder"])
    if read_test_results(out) is not None and not hparams.get("force", False):
        logger.info("%s: fold already finished, skipping (--force=True to redo)", out)
        return None
    sb.create_experiment_directory(experiment_directory=str(out), hyperparams_to_save=hparams_file, overrides=overrides)
    store = EmbeddingStore(hparams["store_dir"], layers=hparams.get("layers"))
    splits = read_fold(hparams["fold_dir"], store)
    labels = list(hparams["labels"])
    run_on_main(ensure_label_encoder, args=[hparams["label_encoder_file"], labels, splits["train"]["emotion"]])
    device = training_device(run_opts)
    ids = [u for df in splits.values() for u in df["ID"]]
    source = FeatureSource(store, ids, device, hparams.get("cache", "auto"), hparams["num_workers"])
    model = prepare_model(hparams, store, source, splits)
    if hparams["class_weighting"] == "inverse":
        hparams["class_weights"] = class_weights(splits["train"]["emotion"].astype(str).tolist(), labels)
    hparams["layer_ids"] = store.layers
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
    )
    result = train_and_test(hparams, run_opts, model, loaders)
    result.update(layers=store.layers, encoder=store.meta.get("encoder"), n={k: len(v) for k, v in splits.items()})
    if if_main_process():
        write_test_results(out, result)
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
