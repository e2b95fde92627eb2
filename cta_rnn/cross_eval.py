"""Cross-corpus testing: every fold model of a source experiment on all utterances of a target corpus.

    python -m cta_rnn.cross_eval --source_exp ../IEMOCAP/exp/cta_rnn_whisper_tiny_en_loso_speaker \
        --target_manifest ../MSP-IMPROV/data/manifest.csv --target_store ../MSP-IMPROV/dump/whisper_tiny_en \
        --out exp/IEMOCAP_to_MSP-IMPROV_cta_rnn_whisper_tiny_en_loso_speaker

Writes ``<out>/fold<k>/predictions.csv`` per source fold model (finished ones are skipped), then scores
``<out>`` like stage 3 (mean +- std over the fold models). Before any fold is tested, every source fold is
checked: finished (``test_results.json``), trained on the target store's encoder and layers, and knowing every
target emotion; a problem is one line naming the fold's file (``--source_advice`` / ``--target_advice``: what
the caller's command line should do about it, e.g. ``recipes/cross_corpus/run.sh``'s own commands).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from cta_rnn.artifacts import (
    encoder_differences,
    read_folds_list,
    read_manifest,
    read_model_spec,
    read_results,
    read_store_meta,
    read_test_results,
    write_label_encoder,
    write_predictions,
)
from cta_rnn.brain import EmotionBrain
from cta_rnn.checkpoint import load_fold_model
from cta_rnn.data import eval_loader, stats_per_speaker
from cta_rnn.feature_cache import FeatureSource
from cta_rnn.io_utils import atomic_write_text, one_line
from cta_rnn.models import head_sizes
from cta_rnn.results_md import fmt_num, fmt_pct, write_results_md
from cta_rnn.scoring import score_experiment, summary_line
from cta_rnn.store import EmbeddingStore, StoreError, StoreMismatchError

logger = logging.getLogger("cta_rnn.cross_eval")


def test_on_target(
    model: torch.nn.Module,
    spec: dict,
    store: EmbeddingStore,
    rows: pd.DataFrame,
    device: str = "cpu",
    batch_size: int = 16,
    cache: str = "auto",
) -> pd.DataFrame:
    """Predictions of a trained model on target utterances, through the test path of training (EmotionBrain);
    a model with dimensions is scored on the target's ratings of them (its manifest's columns).

    Speaker-normalised models get the target speakers' own statistics (no labels used), as in training.
    """
    source = FeatureSource(store, rows["ID"].tolist(), device, cache, batch_size=batch_size)
    if model.normalizer.mode == "speaker":
        model.normalizer.set_speakers(stats_per_speaker(source, rows, 200))
    dims = list(spec["dimensions"]) if head_sizes(spec)[1] else []
    loader = eval_loader(source, rows, spec["labels"], model.normalizer, batch_size, dims, "the target manifest")
    brain = EmotionBrain(
        modules={"model": model},
        hparams={"labels": spec["labels"], "layer_ids": spec["layers"], "dimensions": dims},
        run_opts={"device": device},
    )
    brain.evaluate(loader, progressbar=False)
    frame = brain.predictions_frame()
    del loader, brain
    source.release()  # the next source fold sizes its cache from the GPU memory this one held
    return frame


SOURCE_ADVICE = "finish stage 2 of the source recipe (its run.sh --stage 2 --stop_stage 2 with the same options)"
TARGET_ADVICE = "dump the target with the source models' encoder (its run.sh --stage 1 --stop_stage 1 --encoder ...)"


def source_folds(source_exp: Path) -> list[Path]:
    """The source experiment's fold folders: every ``fold<k>`` there and every fold its ``folds.json`` lists."""
    there = {int(p.name[4:]) for p in source_exp.glob("fold*") if p.is_dir() and p.name[4:].isdigit()}
    listed = set(read_folds_list(source_exp) or [])
    return [source_exp / f"fold{k}" for k in sorted(there | listed)]


def check_sources(
    source_exp: Path,
    manifest: pd.DataFrame,
    store_dir: Path,
    manifest_path: Path | str = "the target manifest",
    source_advice: str = SOURCE_ADVICE,
    target_advice: str = TARGET_ADVICE,
) -> list[tuple[Path, dict]]:
    """Every source fold, checked before any is tested: (fold folder, model spec) of each.

    Refused in one line naming the file: a fold that did not finish (``{fold}`` in ``source_advice`` is its
    number), a model trained on another encoder or on layers the target store lacks, and target emotions outside
    a model's labels.
    """
    folds = source_folds(source_exp)
    if not folds:
        raise FileNotFoundError(f"{source_exp}: no trained fold (fold*/model.json); {SOURCE_ADVICE}")
    meta = read_store_meta(store_dir)
    emotions = set(manifest["emotion"].astype(str))
    checked = []
    for fold in folds:
        if not (fold / "model.json").is_file() or read_test_results(fold) is None:
            advice = source_advice.replace("{fold}", fold.name[4:])
            raise ValueError(f"{fold}: training did not finish (no test_results.json); {advice}")
        spec = read_model_spec(fold)
        diffs = encoder_differences(spec.get("encoder"), meta.get("encoder"))
        if diffs:
            raise StoreMismatchError(
                f"{store_dir}: target store encoder differs from the one of {fold / 'model.json'} "
                f"({'; '.join(diffs)}); {target_advice}"
            )
        absent = [k for k in spec["layers"] if k not in meta["layers"]]
        if absent:
            raise StoreMismatchError(
                f"{store_dir}: target store lacks layers {absent} of {fold / 'model.json'} "
                f"(has {meta['layers']}); {target_advice}"
            )
        unknown = sorted(emotions - set(map(str, spec["labels"])))
        if unknown:
            raise ValueError(
                f"{manifest_path}: target emotions {unknown} are not among the labels of {fold / 'model.json'} "
                f"{list(spec['labels'])}; map or drop them in the target's data prep"
            )
        checked.append((fold, spec))
    return checked


def cross_evaluate(
    source_exp: Path,
    manifest: pd.DataFrame,
    store_dir: Path,
    out: Path,
    force: bool = False,
    device: str = "cpu",
    manifest_path: Path | str = "the target manifest",
    source_advice: str = SOURCE_ADVICE,
    target_advice: str = TARGET_ADVICE,
) -> int:
    """Test every source fold model on the target (all checked first); returns how many were (re)computed."""
    checked = check_sources(source_exp, manifest, store_dir, manifest_path, source_advice, target_advice)
    done = 0
    for fold, spec in checked:
        dest = out / fold.name
        if (dest / "predictions.csv").exists() and not force:
            logger.info("%s exists: skipping", dest / "predictions.csv")
            continue
        store = EmbeddingStore(store_dir, layers=spec["layers"])
        rows = manifest[manifest["ID"].isin(store.index.keys())].reset_index(drop=True)
        if rows.empty:
            raise StoreMismatchError(f"{store_dir}: none of the utterances of {manifest_path} is in the target store")
        model, spec = load_fold_model(fold, device)
        frame = test_on_target(model, spec, store, rows, device)
        write_label_encoder(dest / "label_encoder.txt", spec["labels"])
        write_predictions(dest, frame)
        logger.info("%s: %d target utterances -> %s", fold.name, len(frame), dest / "predictions.csv")
        done += 1
    return done


def summary_table(recipes_dir: Path, cross_dir: Path, exp_name: str, corpora: Sequence[str]) -> str:
    """Markdown: train corpus x test corpus, within-corpus from each recipe, cross-corpus from ``cross_dir``.

    When any of these experiments has dimensions, the table gains the mean CCC over dimensions and the CCC of each
    dimension (mean ± std over fold models; '-' where a cell has none); otherwise it is the categorical table.
    """
    cells = {}
    for src in corpora:
        for tgt in corpora:
            within = src == tgt
            path = recipes_dir / src / "exp" / exp_name if within else cross_dir / f"{src}_to_{tgt}_{exp_name}"
            cells[src, tgt] = read_results(path)
    dims = list(dict.fromkeys(d for res in cells.values() if res for d in res.get("dimensions") or []))
    ccc_cols = ["mean CCC", *(f"CCC {d}" for d in dims)] if dims else []
    lines = [
        f"Experiment `{exp_name}`: mean +- std over fold models (within: held-out folds; cross: all of the target).",
        "",
        "| train | test | kind | folds | WA (%) | UA (%) | F1 (%) |" + "".join(f" {c} |" for c in ccc_cols),
        "|---|---|---|---|---|---|---|" + "---|" * len(ccc_cols),
    ]
    for (src, tgt), res in cells.items():
        kind = "within" if src == tgt else "cross"
        if res is None:
            lines.append(f"| {src} | {tgt} | {kind} | - | - | - | - |" + " - |" * len(ccc_cols))
            continue
        ms = res["mean_std"]
        row = [fmt_pct(ms[k]["mean"], ms[k]["std"]) for k in ("wa", "ua", "macro_f1")]
        if dims:
            md = res.get("mean_std_dimensional") or {}
            row += [fmt_num(md["mean_CCC"]["mean"], md["mean_CCC"]["std"]) if md else "-"]
            row += [fmt_num(md[d]["CCC"]["mean"], md[d]["CCC"]["std"]) if d in md else "-" for d in dims]
        lines.append(f"| {src} | {tgt} | {kind} | {len(res['folds_scored'])} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m cta_rnn.cross_eval``."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source_exp", required=True, type=Path, help="source experiment folder with fold*/")
    p.add_argument("--target_manifest", required=True, type=Path)
    p.add_argument("--target_store", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--recipe_root", type=Path, default=Path("."), help="where RESULTS.md is collected")
    p.add_argument("--force", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--summary", default=None, help="also write this Markdown table (both directions + within)")
    p.add_argument("--corpora", default="IEMOCAP,MSP-IMPROV", help="recipes in the summary table")
    p.add_argument(
        "--source_advice", default=SOURCE_ADVICE, help="what to do about an unfinished source fold ({fold}: its number)"
    )
    p.add_argument("--target_advice", default=TARGET_ADVICE, help="what to do about a target store of another encoder")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        manifest = read_manifest(args.target_manifest, required=("ID", "emotion", "speaker"))
        cross_evaluate(
            args.source_exp,
            manifest,
            args.target_store,
            args.out,
            args.force,
            args.device,
            args.target_manifest,
            args.source_advice,
            args.target_advice,
        )
    except (OSError, ValueError, StoreError) as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1

    print(summary_line(args.out, score_experiment(args.out)))
    print(f"wrote {write_results_md(args.recipe_root)}")
    if args.summary:
        exp_name = args.source_exp.name
        recipes_dir = args.source_exp.resolve().parents[2]
        table = summary_table(recipes_dir, args.out.parent, exp_name, args.corpora.split(","))
        atomic_write_text(args.summary, table)
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
