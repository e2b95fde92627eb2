"""The recipe driver's questions (``recipes/shared/stages.sh`` and the recipes' ``local/`` scripts), answered before
anything is created; every error is one line on stderr, exit status 1.

    python -m cta_rnn.driver protocol NAME              # a known fold protocol?
    python -m cta_rnn.driver store DIR                  # a finished embedding store? ("run stage 1")
    python -m cta_rnn.driver ngpu N                     # N CUDA GPUs for torchrun? (before it starts)
    python -m cta_rnn.driver suffix [--train_config FILE] TRAIN_YAML -- ARGS
        # checks the user's training overrides; prints the experiment-name suffix they give ('' for none)
    python -m cta_rnn.driver folds --protocol_dir DIR [--select 1-3]     # the selected folds, one per line
    python -m cta_rnn.driver experiment --exp DIR --store DIR --folds 1 2 [--protocol_dir DIR]
        # writes the experiment's folds.json and encoder.json
    python -m cta_rnn.driver protocols ROOT             # the protocols a custom corpus supports (comma list)
    python -m cta_rnn.driver labels MANIFEST OUT_YAML   # a custom corpus's label set as a training override
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Sequence
from pathlib import Path

from cta_rnn.artifacts import available_folds, select_folds, write_encoder_json, write_folds_list
from cta_rnn.corpora.custom import supported_protocols, write_label_overrides
from cta_rnn.corpora.folds import ALL_PROTOCOLS
from cta_rnn.hparams_schema import (
    HparamsError,
    check_overrides,
    experiment_suffix,
    parse_cli_overrides,
    yaml_keys,
)


def check_protocol(name: str) -> None:
    """A fold protocol this code base can prepare."""
    if name not in ALL_PROTOCOLS:
        close = difflib.get_close_matches(name, ALL_PROTOCOLS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise HparamsError(f"unknown protocol {name!r}{hint}; choose from {', '.join(ALL_PROTOCOLS)}")


def check_store(store_dir: str | Path) -> None:
    """A finished embedding store (stage 1 done)."""
    from cta_rnn.store import is_complete  # torch: imported only by the questions that need it (each is a process)

    if not is_complete(store_dir):
        state = "an unfinished dump" if Path(store_dir).is_dir() else "no embedding store"
        raise FileNotFoundError(f"{store_dir}: {state} there; run stage 1 (the dump) first")


def parser() -> argparse.ArgumentParser:
    """The driver's sub-commands."""
    ap = argparse.ArgumentParser(prog="python -m cta_rnn.driver", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("protocol", help="check a fold protocol name").add_argument("name")
    sub.add_parser("store", help="check that a store is finished").add_argument("store_dir")
    sub.add_parser("ngpu", help="check that this machine has N CUDA GPUs").add_argument("ngpu", type=int)
    sx = sub.add_parser("suffix", help="check training overrides; print the experiment-name suffix")
    sx.add_argument("train_yaml", help="the training YAML the overrides apply to")
    sx.add_argument("--train_config", default=None, help="the user's own training YAML (part of the suffix)")
    sx.add_argument("overrides", nargs=argparse.REMAINDER, help="-- --key=value ...")
    f = sub.add_parser("folds", help="print the selected fold numbers of a protocol, one per line")
    f.add_argument("--protocol_dir", required=True)
    f.add_argument("--select", default="")
    e = sub.add_parser("experiment", help="write an experiment's folds.json and encoder.json")
    e.add_argument("--exp", required=True)
    e.add_argument("--store", required=True)
    e.add_argument("--folds", nargs="+", type=int, required=True)
    e.add_argument("--protocol_dir", default=None, help="data/folds/<protocol>: records the protocol's folds")
    sub.add_parser("protocols", help="print the fold protocols a custom corpus supports").add_argument("root")
    lab = sub.add_parser("labels", help="write a manifest's label set as a training override YAML")
    lab.add_argument("manifest")
    lab.add_argument("out_yaml")
    return ap


def answer(args: argparse.Namespace) -> None:
    """Run one sub-command (raises OSError / ValueError with a one-line message)."""
    if args.cmd == "protocol":
        check_protocol(args.name)
    elif args.cmd == "store":
        check_store(args.store_dir)
    elif args.cmd == "ngpu":
        from cta_rnn import device  # torch, as above

        device.check_gpu_count(args.ngpu, device.facts())
    elif args.cmd == "suffix":
        rest = args.overrides[1:] if args.overrides[:1] == ["--"] else args.overrides
        overrides = parse_cli_overrides(rest)
        check_overrides(overrides, yaml_keys(args.train_yaml))
        own = Path(args.train_config).read_text(encoding="utf-8") if args.train_config else None
        print(experiment_suffix(overrides, own))
    elif args.cmd == "folds":
        print("\n".join(map(str, select_folds(args.select, available_folds(args.protocol_dir)))))
    elif args.cmd == "experiment":
        available = available_folds(args.protocol_dir) if args.protocol_dir else None
        write_folds_list(args.exp, args.folds, available)
        write_encoder_json(args.exp, args.store)
    elif args.cmd == "protocols":
        print(",".join(supported_protocols(args.root)))
    else:
        print(f"labels: {write_label_overrides(args.manifest, args.out_yaml)} -> {args.out_yaml}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m cta_rnn.driver``."""
    args = parser().parse_args(argv)
    try:
        answer(args)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
