"""Training hyperparameters checked where they enter: a declared schema of keys, types, ranges and choices.

Every override of the training YAML (``--key=value`` and ``--conf FILE`` of ``cta_rnn.train``; the recipe
driver's ``--train_args``, ``--train_config`` and arguments after ``--``) is checked against :data:`SCHEMA`
before anything runs; an error is one line naming the key (``unknown key lrr; did you mean lr?``,
``batch_size: expected an integer >= 1, got 'abc'``). ``model_kwargs`` are checked per model class by
:func:`cta_rnn.models.build_model`.

Also here: loading the training YAML with its override files (``--conf``) and command-line overrides, and the
model spec (``model.json``) a run's hyperparameters give. The recipe driver's checks use it through
:mod:`cta_rnn.driver`.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

if TYPE_CHECKING:
    from cta_rnn.store import EmbeddingStore


class HparamsError(ValueError):
    """A training hyperparameter that is unknown or out of its declared range (one-line message)."""


@dataclass(frozen=True)
class Key:
    """One declared hyperparameter: what it accepts (for messages) and the check of a value."""

    expect: str
    ok: Callable[[Any], bool]
    identity: bool = True
    """Part of a run's identity: changing it changes the trained model (run-control keys are not)."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # not NaN


def integer(lo: int | None = None, identity: bool = True) -> Key:
    """An integer (``>= lo`` when given)."""
    expect = f"an integer >= {lo}" if lo is not None else "an integer"
    return Key(expect, lambda v: _is_int(v) and (lo is None or v >= lo), identity)


def number(gt: float | None = None, ge: float | None = None, lt: float | None = None) -> Key:
    """A real number ``> gt`` / ``>= ge`` / ``< lt`` (the bounds given)."""
    bounds = [f"{op} {b}" for op, b in ((">", gt), (">=", ge), ("<", lt)) if b is not None]

    def ok(v: Any) -> bool:
        return _is_num(v) and (gt is None or v > gt) and (ge is None or v >= ge) and (lt is None or v < lt)

    return Key(" ".join(["a number", " and ".join(bounds)]).strip(), ok)


def choice(*values: str, identity: bool = True) -> Key:
    """One of the given names."""
    return Key(f"one of {' | '.join(values)}", lambda v: v in values, identity)


def flag(identity: bool = True) -> Key:
    """``True`` or ``False``."""
    return Key("True or False", lambda v: isinstance(v, bool), identity)


def string(identity: bool = True) -> Key:
    """A non-empty string (a path or a name)."""
    return Key("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()), identity)


def optional(key: Key) -> Key:
    """``key`` or null."""
    return Key(f"{key.expect} or null", lambda v: v is None or key.ok(v), key.identity)


def _labels_ok(v: Any) -> bool:
    names = [str(x) for x in v] if isinstance(v, list) else []
    return (
        bool(names) and all(isinstance(x, (str, int)) and str(x).strip() for x in v) and len(set(names)) == len(names)
    )


def _dimensions_ok(v: Any) -> bool:
    return (
        isinstance(v, list) and bool(v) and all(isinstance(x, str) and x.strip() for x in v) and len(set(v)) == len(v)
    )


def _layers_ok(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(_is_int(x) for x in v) and len(set(v)) == len(v)


NAMED_SPECS: dict[str, Key] = {
    "int": integer(),
    "bool": flag(),
    "text": string(),
    "labels": Key("a non-empty list of distinct names", _labels_ok),
    "layers": Key(
        "null (all layers) or a non-empty list of distinct layer numbers", lambda v: v is None or _layers_ok(v)
    ),
    "names": Key("a non-empty list of distinct manifest column names", _dimensions_ok),
    "mapping": Key("a mapping of keyword arguments, e.g. {dropout: 0.3}", lambda v: isinstance(v, dict)),
}
"""The bracket specs that are a single word (``[bool]``); others: ``[int >= 1]``, ``[number > 0 < 1]``, ``[a | b]``."""
BOUND_NAMES = {">": "gt", ">=": "ge", "<": "lt"}
SPEC_LINE = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*:[^#\n]*#\s*\[(?P<spec>[^\]]+)\]", re.MULTILINE)
SHARED_TRAIN_YAML = Path(__file__).resolve().parents[1] / "recipes" / "shared" / "hparams" / "train.yaml"


def _plain_number(text: str) -> int | float:
    """``"0"`` -> 0, ``"0.5"`` -> 0.5 (messages show bounds as written)."""
    value = float(text)
    return int(value) if value.is_integer() else value


def parse_spec(text: str, where: str = "spec") -> Key:
    """A :class:`Key` from a bracket spec of the training YAML: ``int >= 1``, ``number > 0 < 1``, ``bool``,
    ``text``, ``a | b | c``, ``labels``, ``layers``, ``names``, ``mapping``, each optionally ``null or ...`` and
    ``..., run`` (run control: not part of a run's identity)."""
    base, *flags = [part.strip() for part in text.split(",")]
    if flags not in ([], ["run"]):
        raise HparamsError(f"{where}: unknown flag(s) {flags} in [{text}] (only ', run')")
    nullable = base.startswith("null or ")
    base = base.removeprefix("null or ").strip()
    if "|" in base:
        key = choice(*[c.strip() for c in base.split("|")])
    elif base in NAMED_SPECS:
        key = NAMED_SPECS[base]
    else:
        kind, *rest = base.split()
        bounds = dict(zip(rest[::2], rest[1::2]))
        if kind not in ("int", "number") or len(rest) % 2 or set(bounds) - set(BOUND_NAMES):
            raise HparamsError(f"{where}: cannot read the spec [{text}] (e.g. [int >= 1], [number > 0 < 1], [a | b])")
        try:
            values = {BOUND_NAMES[op]: _plain_number(v) for op, v in bounds.items()}
        except ValueError:
            raise HparamsError(f"{where}: a bound of [{text}] is not a number") from None
        if kind == "int" and set(values) - {"ge"}:
            raise HparamsError(f"{where}: an int spec takes only '>= N', got [{text}]")
        key = integer(int(values["ge"]) if "ge" in values else None) if kind == "int" else number(**values)
    key = optional(key) if nullable else key
    return dataclasses.replace(key, identity=not flags)


def read_schema(path: str | Path = SHARED_TRAIN_YAML) -> dict[str, Key]:
    """The declared hyperparameters of a training YAML: every top-level key whose comment opens with a
    [bracket spec], in file order. A spec that cannot be read names ``file:line``."""
    content = Path(path).read_text(encoding="utf-8")
    schema = {}
    for m in SPEC_LINE.finditer(content):
        line = content.count("\n", 0, m.start()) + 1
        schema[m["key"]] = parse_spec(m["spec"], f"{path}:{line}")
    return schema


SCHEMA: dict[str, Key] = read_schema() if SHARED_TRAIN_YAML.is_file() else {}
"""The declared training hyperparameters of ``recipes/shared/hparams/train.yaml`` and what each accepts: read from
the YAML itself, the one place a hyperparameter is declared (empty when the package is used without its recipes)."""

IDENTITY_KEYS = tuple(k for k, spec in SCHEMA.items() if spec.identity)
"""What a run is: a fold resumed (or skipped as finished) with another value of one of these is refused."""


def yaml_keys(path: str | Path) -> set[str]:
    """Top-level keys of a (hyperpyyaml) file, read without instantiating anything."""
    content = Path(path).read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:", content, flags=re.MULTILINE))


def load_yaml(content: str, where: str = "overrides") -> Any:
    """YAML 1.2 as hyperpyyaml reads it (``1e-3`` is a number, ``yes`` a string), plain Python values."""
    try:
        return YAML(typ="safe", pure=True).load(content)
    except YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise HparamsError(f"{where}: not valid YAML ({problem}): {' '.join(content.split())[:120]}") from None


def load_yaml_file(path: str | Path) -> Any:
    """A YAML file read as :func:`load_yaml` reads overrides (YAML 1.2: ``1e-3`` is a number, as on the command
    line); a syntax error is one line ``FILE:LINE: problem``."""
    content = Path(path).read_text(encoding="utf-8")
    try:
        return YAML(typ="safe", pure=True).load(content)
    except YAMLError as err:
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise HparamsError(f"{where}: not valid YAML: {problem}") from None


def check_value(key: str, value: Any) -> None:
    """Raise :class:`HparamsError` when a declared key has a value outside its declared range."""
    spec = SCHEMA.get(key)
    if spec is not None and not spec.ok(value):
        raise HparamsError(f"{key}: expected {spec.expect}, got {value!r}")


def check_overrides(overrides: Mapping[str, Any], known: Sequence[str] | set[str] = ()) -> None:
    """Unknown keys (neither declared nor in the training YAML) and out-of-range values, one line each."""
    allowed = set(SCHEMA) | set(known)
    for key, value in overrides.items():
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(sorted(SCHEMA))}"
            raise HparamsError(f"unknown key {key}{hint}")
        check_value(key, value)


def check_hparams(hparams: Mapping[str, Any]) -> None:
    """Every declared key of loaded hyperparameters (YAML files included) within its range."""
    for key in SCHEMA:
        if key in hparams:
            check_value(key, hparams[key])


def plain(value: Any) -> Any:
    """A JSON-comparable form of a hyperparameter value (tuples as lists, mappings recursively)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def identity(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The identity keys of loaded hyperparameters, paths made absolute (``run_config.json`` of a fold)."""
    out = {k: plain(hparams.get(k)) for k in IDENTITY_KEYS}
    for k in ("fold_dir", "store_dir"):
        if isinstance(out.get(k), str):
            out[k] = str(Path(out[k]).resolve())
    return out


def _short(value: Any, width: int = 40) -> str:
    content = json.dumps(value, sort_keys=True)
    return content if len(content) <= width else content[: width - 3] + "..."


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``key: old -> new`` for every key both records hold with different values (schema order)."""
    keys = [k for k in IDENTITY_KEYS if k in old and k in new] + sorted((set(old) & set(new)) - set(IDENTITY_KEYS))
    return [f"{k}: {_short(old[k])} -> {_short(new[k])}" for k in keys if old[k] != new[k]]


READABLE = re.compile(r"[A-Za-z0-9.+-]+")
MAX_READABLE = 40


def experiment_suffix(overrides: Mapping[str, Any], config_text: str | None = None) -> str:
    """The part of an experiment name that the user's training overrides add: '' when there are none.

    Short scalar overrides read as themselves (``lr0.0005``, ``batch_size16-lr0.0005``: sorted by key);
    anything longer, nested, or a training YAML of one's own gives ``cfg`` + 8 hex digits of a SHA-1 of the
    canonical (sorted JSON) overrides and the YAML's text. Run-control keys (force, cache, num_workers) do not
    count: they do not change the trained model.
    """
    kept = {k: plain(v) for k, v in sorted(overrides.items()) if k not in SCHEMA or SCHEMA[k].identity}
    if not kept and config_text is None:
        return ""
    parts = [f"{k}{v}" for k, v in kept.items()]
    readable = "-".join(parts)
    if (
        config_text is None
        and all(isinstance(v, (int, float, str)) and READABLE.fullmatch(str(v)) for v in kept.values())
        and len(readable) <= MAX_READABLE
    ):
        return readable
    payload = json.dumps({"overrides": kept, "train_config": config_text}, sort_keys=True)
    return "cfg" + hashlib.sha1(payload.encode("utf-8")).hexdigest()[:8]


def merge_into(dst: dict[str, Any], src: Mapping[str, Any]) -> dict[str, Any]:
    """Apply one source of overrides: later values win, nested mappings (model_kwargs) merge key by key.

    ``model_kwargs_replace: True`` (a model of another family) starts ``model_kwargs`` afresh.
    """
    if src.get("model_kwargs_replace"):
        dst["model_kwargs"] = {}
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            merge_into(dst[k], v)
        else:
            dst[k] = dict(v) if isinstance(v, Mapping) else v
    return dst


def load_cli_overrides(content: str) -> dict[str, Any]:
    """SpeechBrain's ``key: value`` lines of command-line overrides; a key given twice: the later one wins."""
    merged: dict[str, Any] = {}
    for entry in re.split(r"\n(?=\S)", content.strip()):
        if entry.strip():
            merge_into(merged, load_yaml(entry, "the command line") or {})
    return merged


def parse_cli_overrides(args: Sequence[str]) -> dict[str, Any]:
    """``--key=value`` / ``--key value`` arguments -> overrides, as SpeechBrain reads them (run options dropped)."""
    import speechbrain as sb

    _, _, overrides = sb.parse_arguments(["train.yaml", *args])
    return load_cli_overrides(overrides) if overrides else {}


def pop_option(argv: Sequence[str], name: str) -> tuple[list[str], list[str]]:
    """The values of ``--name FILE`` / ``--name=FILE`` (repeatable) and the other arguments."""
    values, rest, it = [], [], iter(argv)
    for arg in it:
        if arg == f"--{name}":
            value = next(it, None)
            if value is None:
                raise HparamsError(f"--{name} needs a file name")
            values.append(value)
        elif arg.startswith(f"--{name}="):
            values.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
    return values, rest


def split_conf_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate ``--conf FILE`` (repeatable) from the other arguments."""
    return pop_option(argv, "conf")


def merge_overrides(conf_files: Sequence[str], cli_overrides: str | dict | None) -> dict[str, Any]:
    """Override files in order, then command-line overrides; nested dicts (model_kwargs) merge key by key.

    A file with ``model_kwargs_replace: True`` (a model of another family, e.g. SUPERB's WeightedSumPool)
    starts ``model_kwargs`` afresh instead of merging into the keys set before it. Values are read as
    hyperpyyaml reads them (YAML 1.2: ``1e-3`` is a number); a key given twice: the later one wins.
    """
    merged: dict[str, Any] = {}
    for path in conf_files:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: override YAML not found")
        merge_into(merged, load_yaml(Path(path).read_text(encoding="utf-8"), where=str(path)) or {})
    if cli_overrides:
        merge_into(merged, load_cli_overrides(cli_overrides) if isinstance(cli_overrides, str) else cli_overrides)
    return merged


def load_hparams(hparams_file: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The training hyperparameters: the YAML with overrides applied.

    With ``model_kwargs_replace`` the model's keyword arguments are only those given after that flag.
    """
    from hyperpyyaml import load_hyperpyyaml  # only where the YAML is loaded: the driver's checks start faster

    with open(hparams_file, encoding="utf-8") as f:
        hparams = load_hyperpyyaml(f, overrides)
    if hparams.get("model_kwargs_replace"):
        hparams["model_kwargs"] = dict(overrides.get("model_kwargs") or {})
    check_hparams(hparams)
    return hparams


TASK_KEYS = ("task", "dimensions", "dimension_loss", "dimension_weight", "select_by")
"""Hyperparameters of dimensional emotion: not part of a categorical run's identity (runs before they existed)."""


def task_dimensions(hparams: dict[str, Any]) -> list[str]:
    """The dimensions a run regresses: none for ``task: categorical``."""
    return [] if hparams.get("task", "categorical") == "categorical" else list(hparams["dimensions"])


def resolve_select_key(hparams: dict[str, Any]) -> str:
    """``UA`` or ``CCC``: ``select_by``, with ``auto`` = mean CCC for ``task: dimensional``, UA otherwise; a
    metric the task does not produce is refused."""
    task, key = hparams.get("task", "categorical"), hparams.get("select_by", "auto")
    if key == "auto":
        return "CCC" if task == "dimensional" else "UA"
    if (key == "UA" and task == "dimensional") or (key == "CCC" and task == "categorical"):
        raise HparamsError(f"select_by: {key} needs a task that predicts it (task is {task})")
    return key


def model_spec(hparams: dict[str, Any], store: EmbeddingStore) -> dict[str, Any]:
    """What rebuilds the trained model without the training YAML (``model.json``, see models.build_model); a
    dimensional task adds task, dimensions and select_by (dimension_stats come from the fold's training set)."""
    task = {}
    if hparams.get("task", "categorical") != "categorical":
        task = {
            "task": hparams["task"],
            "dimensions": task_dimensions(hparams),
            "select_by": resolve_select_key(hparams),
        }
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
        "average_checkpoints": int(hparams.get("average_checkpoints") or 1),
        "encoder": store.meta.get("encoder"),
        **task,
    }
