"""Studies: a set of pretraining runs, their evaluations and their comparison, described as data.

A study is a YAML file (``studies/fmnist.yaml``)::

    name: fmnist
    out: runs/studies/fmnist            # one folder per run: OUT/NAME_s<seed>
    results: docs/fmnist                # results.json, summary.md and the plots are copied here too
    prepare:                            # commands run, in order, when what they create is missing
      - {creates: data/fashion-mnist/test, run: [python, scripts/prepare_fashion_mnist.py, data/fashion-mnist]}
    seeds: [0, 1]
    options: {data: {source: data/fashion-mnist/train}}   # configuration sections for every run
    knn: {every: 1, train_data: ..., val_data: ...}      # the kNN monitor (the knn section) of every run
    probe: {train_data: ..., val_data: ..., standardize: true, lr: 0.1}   # `regioncl probe` options
    runs:
      - {name: mocov2, recipe: fmnist_mocov2}
      - {name: mocov2_small, recipe: fmnist_mocov2, options: {data.source: ...}, probe: {train_data: ...}}
      - {name: regioncl_m, recipe: fmnist_regioncl_m}
      - {name: random_init, recipe: fmnist_mocov2, options: {optim: {max_steps: 0}}, seeds: [0], reference: true}
    pairs: [[regioncl_m, mocov2]]       # RegionCL-X − X: the difference and its standard error, one plot each
    extra_seeds: {max: 3, within: 2.0}  # a pair whose difference is within 2 SE gets one more seed each, up to 3

A run's pretraining configuration is its recipe's (``sample`` when it names none), then the
study's ``options`` and ``knn``, then its own ``options``, then the command line's ``--set`` (say
``--set data.image_size=64`` on a GPU, with another ``--out``); options are sections, or
``SECTION.FIELD`` keys. The result is written to ``RUN/recipe.yaml`` and the run trains from that
file, so a folder always shows what made it; a finished run whose options no longer match the study is
refused rather than silently mixed into the table. The probe runs at the run's image size.

The runner is idempotent: a finished run (``encoder.safetensors`` and ``result.json``) is skipped,
a run with a checkpoint is resumed from it, a finished run without ``linear.json`` gets only its
probe. Every command it starts is printed first (``==`` lines), and each run records the commit of
the code that trained and probed it (``RUN/study_run.json``).

A study may outlive its run folders (runs spread over machines, a scratch disk wiped between
sessions): a row of the committed ``RESULTS/results.json`` whose run has no finished folder under
OUT is a *recorded* run. It counts as done, stays in the table and the plots, and is never trained
again; delete its row to run it again. A row carries the digest of the options that made it
(``options_digest``): a recorded row made with other options than the study now gives is refused,
as a run folder is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..files import list_checkpoints
from ..processes import regioncl_command, regioncl_env
from ..train.config import DEFAULT_RECIPE, deep_merge, load_recipe, make_config, nest
from .report import PAIR_METRICS, configuration_summary, pair_difference, pair_summary, study_markdown, summarize_run

#: the repository's root (a clone's): the commit of the code is read there.
ROOT = Path(__file__).resolve().parents[2]
_STUDY_KEYS = {
    "name",
    "out",
    "results",
    "prepare",
    "seeds",
    "options",
    "knn",
    "probe",
    "runs",
    "pairs",
    "extra_seeds",
    "launcher",
}
_RUN_KEYS = {"name", "recipe", "options", "seeds", "reference", "probe"}


@dataclass
class RunSpec:
    """One configuration of a study, trained once per seed.

    Attributes:
        name: the configuration's name; run folders are ``NAME_s<seed>``.
        options: the full pretraining recipe (every source merged), as written to ``recipe.yaml``.
        seeds: the seeds it runs with before any extra seed.
        reference: a reference line (the random-init encoder, say), in the table but in no pair.
        probe: whether the linear probe runs on it.
        image_size: the pretraining image size, at which the probe runs too.
        probe_options: the probe's options for this configuration (the study's ``probe``, then
            the run's own, then ``--probe-set``).
    """

    name: str
    options: dict[str, Any]
    seeds: list[int]
    reference: bool = False
    probe: bool = True
    image_size: int = 224
    probe_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Study:
    """A parsed study file; see the module docstring for its fields."""

    name: str
    out: Path
    runs: list[RunSpec]
    probe: dict[str, Any] = field(default_factory=dict)
    pairs: list[tuple[str, str]] = field(default_factory=list)
    prepare: list[dict[str, Any]] = field(default_factory=list)
    extra_seeds: dict[str, Any] | None = None
    results: Path | None = None
    launcher: list[str] | None = None  # default: this Python; e.g. ["accelerate", "launch", "--num_processes", "8"]

    def spec(self, name: str) -> RunSpec:
        return next(r for r in self.runs if r.name == name)

    def run_dir(self, name: str, seed: int) -> Path:
        return self.out / f"{name}_s{seed}"


def parse_assignments(items: Sequence[str], what: str) -> dict[str, Any]:
    """``["data.image_size=64", "method.region_cells=[1, 2]"]`` → ``{"data.image_size": 64, ...}`` (values read as YAML)."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what} expects KEY=VALUE, got {item!r}")
        values[key.strip()] = yaml.safe_load(value)
    return values


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping, got {type(value).__name__}")
    return dict(value)


def load_study(
    path: str | os.PathLike,
    overrides: dict[str, Any] | None = None,
    probe_overrides: dict[str, Any] | None = None,
    out: str | os.PathLike | None = None,
) -> Study:
    """Read and check a study file; every error names the study, the run and the key.

    Args:
        path: the YAML file.
        overrides: pretraining fields set on every run, last (``--set``).
        probe_overrides: probe options set on every probe, last (``--probe-set``).
        out: another output folder than the file's ``out`` (a study at another scale).
    """
    path = Path(path)
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"study {path} must be a mapping")
    unknown = sorted(set(raw) - _STUDY_KEYS)
    if unknown:
        raise ValueError(f"study {path}: unknown key(s) {unknown}; known: {sorted(_STUDY_KEYS)}")
    where = f"study {path}"
    try:
        common = deep_merge(
            nest(_mapping(raw.get("options"), f"{where}: options")), {"knn": _mapping(raw.get("knn"), f"{where}: knn")}
        )
        overrides = nest(dict(overrides or {}))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    default_seeds = [int(s) for s in raw.get("seeds", [0])]
    study_probe = _mapping(raw.get("probe"), f"{where}: probe")
    runs: list[RunSpec] = []
    for i, entry in enumerate(raw.get("runs") or []):
        entry = _mapping(entry, f"{where}: runs[{i}]")
        name = entry.get("name")
        if not name or not isinstance(name, str):
            raise ValueError(f"{where}: runs[{i}] has no name")
        bad = sorted(set(entry) - _RUN_KEYS)
        if bad:
            raise ValueError(f"{where}: run {name!r}: unknown key(s) {bad}; known: {sorted(_RUN_KEYS)}")
        if any(r.name == name for r in runs):
            raise ValueError(f"{where}: two runs are named {name!r}")
        try:
            own = nest(_mapping(entry.get("options"), f"{where}: run {name!r}: options"))
            # The recipe's whole chain, resolved: recipe.yaml then stands alone (a run without one
            # starts from the sample recipe, as the pretraining script does).
            options = load_recipe(entry.get("recipe") or DEFAULT_RECIPE)
            for layer in (common, own, overrides):
                options = deep_merge(options, layer)
            options.get("run", {}).pop("output_dir", None)  # the runner sets these per run
            options.get("run", {}).pop("seed", None)
            options.get("run", {}).pop("resume", None)
            config = make_config(options)  # a bad value stops the study before any run starts
        except (OSError, ValueError) as e:
            raise ValueError(f"{where}: run {name!r}: {e}") from None
        seeds = [int(s) for s in entry.get("seeds", default_seeds)]
        # `probe: false` leaves the probe out; a mapping is this run's own probe options (its data, say).
        own_probe = entry.get("probe", True)
        probe_options = {**study_probe, **(own_probe if isinstance(own_probe, dict) else {}), **(probe_overrides or {})}
        runs.append(
            RunSpec(
                name,
                options,
                seeds,
                bool(entry.get("reference", False)),
                own_probe is not False,
                config.data.image_size,
                probe_options,
            )
        )
    if not runs:
        raise ValueError(f"{where} lists no runs")
    names = {r.name for r in runs}
    pairs = []
    for pair in raw.get("pairs") or []:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise ValueError(f"{where}: a pair is [REGIONCL_RUN, BASE_RUN], got {pair!r}")
        missing = [n for n in pair if n not in names]
        if missing:
            raise ValueError(f"{where}: pair {pair} names no run {missing}; runs: {sorted(names)}")
        pairs.append((pair[0], pair[1]))
    extra = raw.get("extra_seeds")
    if extra is not None:
        extra = {
            "max": 3,
            "within": 2.0,
            "metrics": ["knn_final", "linear_top1"],
            **_mapping(extra, f"{where}: extra_seeds"),
        }
        bad = sorted(set(extra["metrics"]) - set(PAIR_METRICS))
        if bad:
            raise ValueError(f"{where}: extra_seeds metrics {bad} unknown; known: {list(PAIR_METRICS)}")
    probe = {**study_probe, **(probe_overrides or {})}
    prepare = [_mapping(p, f"{where}: prepare[{i}]") for i, p in enumerate(raw.get("prepare") or [])]
    for i, step in enumerate(prepare):
        if not step.get("creates") or not step.get("run"):
            raise ValueError(f"{where}: prepare[{i}] needs `creates` (a path) and `run` (a command)")
    launcher = raw.get("launcher")
    return Study(
        name=str(raw.get("name", path.stem)),
        out=Path(out if out is not None else raw.get("out", f"runs/studies/{path.stem}")),
        runs=runs,
        probe=probe,
        pairs=pairs,
        prepare=prepare,
        extra_seeds=extra,
        results=Path(raw["results"]) if raw.get("results") and out is None else None,
        launcher=shlex.split(launcher) if isinstance(launcher, str) else (list(launcher) if launcher else None),
    )


def option_flags(options: dict[str, Any]) -> list[str]:
    """``{"augment": False, "lr": 0.1, "milestones": [6, 8]}`` → ``--augment false --lr 0.1 --milestones [6, 8]``:
    the options of a script whose flags are configuration fields (jsonargparse)."""
    flags: list[str] = []
    for key, value in options.items():
        if value is not None:
            flags += [f"--{key}", json.dumps(value) if isinstance(value, (bool, list, tuple, dict)) else str(value)]
    return flags


def code_commit() -> str | None:
    """The commit of the code the runner starts (``+dirty`` when it has uncommitted changes), or None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "regioncl", "scripts"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def run_finished(run: Path) -> bool:
    """A run is finished when its encoder and its result are written (both come after the last step)."""
    return (run / "encoder.safetensors").is_file() and (run / "result.json").is_file()


def has_checkpoint(run: Path) -> bool:
    return bool(list_checkpoints(run))


def _leaves(options: dict[str, Any]) -> dict[str, Any]:
    return {f"{s}.{k}": v for s, fields in nest(options).items() for k, v in fields.items()}


def options_digest(recipe: dict[str, Any], probe: dict[str, Any]) -> str:
    """A short digest of what makes a run's numbers: its pretraining recipe and its probe's options."""
    text = json.dumps({"recipe": _leaves(recipe), "probe": probe}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class StudyError(UserError):
    """A study that cannot run as asked (its file, or run folders made otherwise): a message, not a trace."""


class StudyRunner:
    """Runs a :class:`Study`: prepare, pretrain, probe, extra seeds, then table, JSON and plots.

    Args:
        study: what to run.
        dry_run: print what would run, start nothing.
        echo: where the ``==`` lines go (stdout by default).
    """

    def __init__(self, study: Study, dry_run: bool = False, echo: Any = None) -> None:
        self.study = study
        self.dry_run = dry_run
        self.echo = echo or (lambda line: print(line, flush=True))
        self.commit = code_commit()
        self._extra: dict[str, set[int]] = {}  # seeds the pairs earned (extra_seeds), by configuration
        # The committed results' rows, read once: which of them stand for missing runs is decided on
        # each call (recorded()), as run folders finish.
        self._committed: list[dict[str, Any]] | None = None

    # ---------------------------------------------------------------- one run
    def _record(self, run: Path, stage: str, seed: int, spec: RunSpec) -> None:
        """Append the commit that is about to work on ``run`` to its ``study_run.json``."""
        path = run / "study_run.json"
        info = (
            json.loads(path.read_text())
            if path.is_file()
            else {"study": self.study.name, "name": spec.name, "seed": seed}
        )
        info.setdefault("commits", []).append({"stage": stage, "commit": self.commit})
        path.write_text(json.dumps(info, indent=1))

    def _check_options(self, run: Path, spec: RunSpec) -> None:
        """Refuse a run folder, or a recorded row, made with other options than the study now gives."""
        path = run / "recipe.yaml"
        if path.is_file():
            before = _leaves(yaml.safe_load(path.read_text()))
            now = _leaves(spec.options)
            changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
            if changed:
                detail = ", ".join(f"{k}: {before.get(k, '(unset)')!r} → {now.get(k, '(unset)')!r}" for k in changed)
                raise StudyError(
                    f"{run} was made with other options than the study now gives ({detail}); give the study "
                    "another --out, or remove the folder to run it again"
                )
        row = None if run_finished(run) else self.recorded().get(run.name)
        if row is not None and row.get("options_digest") not in (None, self._digest(spec)):
            raise StudyError(
                f"the row {run.name} of {self.study.results / 'results.json'} was made with other options than "
                "the study now gives (its options_digest differs); remove the row to run it again"
            )

    def _digest(self, spec: RunSpec) -> str:
        return options_digest(spec.options, self._probe_options(spec, seed=None))

    def _probe_options(self, spec: RunSpec, seed: int | None) -> dict[str, Any]:
        return {"image_size": spec.image_size, **({} if seed is None else {"seed": seed}), **spec.probe_options}

    def _call(self, command: list[str], stdout_to: Path | None = None) -> None:
        self.echo("== " + shlex.join(command) + (f" > {stdout_to}" if stdout_to else ""))
        if self.dry_run:
            return
        tmp = stdout_to.with_name(stdout_to.name + ".tmp") if stdout_to else None
        with open(tmp, "w") if tmp else open(os.devnull, "w") as out:
            proc = subprocess.run(command, stdout=out if tmp else None, env=regioncl_env())
        if proc.returncode:
            raise StudyError(f"exit status {proc.returncode} from: {shlex.join(command)}")
        if tmp:
            os.replace(tmp, stdout_to)

    def pretrain(self, spec: RunSpec, seed: int) -> bool:
        """Train (or resume, or skip) one run; True when it started a process."""
        run = self.study.run_dir(spec.name, seed)
        self._check_options(run, spec)
        if self.done(spec.name, seed):
            return False
        command = [
            *regioncl_command("pretrain", self.study.launcher),
            "--config",
            str(run / "recipe.yaml"),
            "--run.seed",
            str(seed),
            "--run.output_dir",
            str(run),
        ]
        if has_checkpoint(run):
            command += ["--run.resume", "latest"]  # a run that was stopped: on from its checkpoint
        if not self.dry_run:
            run.mkdir(parents=True, exist_ok=True)
            (run / "recipe.yaml").write_text(yaml.safe_dump(spec.options, sort_keys=True))
            self._record(run, "pretrain", seed, spec)
        self.echo(f"== pretrain {spec.name} seed {seed} → {run}" + (" (resumed)" if has_checkpoint(run) else ""))
        self._call(command, stdout_to=run / "result.json")
        return True

    def probe(self, spec: RunSpec, seed: int) -> bool:
        """The linear probe of a finished run, unless it has one; True when it started a process."""
        run = self.study.run_dir(spec.name, seed)
        if (
            not spec.probe
            or (run / "linear.json").is_file()
            or run.name in self.recorded()
            or not (self.dry_run or run_finished(run))
        ):
            return False  # a recorded run has no folder here to probe: its row keeps what it has
        options = self._probe_options(spec, seed)
        command = [*regioncl_command("probe", self.study.launcher), str(run), *option_flags(options)]
        if not self.dry_run:
            self._record(run, "probe", seed, spec)
        self.echo(f"== linear probe {spec.name} seed {seed}")
        self._call(command, stdout_to=run / "linear.json")
        return True

    # ---------------------------------------------------------------- the study
    def prepare(self) -> None:
        for step in self.study.prepare:
            if not Path(step["creates"]).exists():
                command = shlex.split(step["run"]) if isinstance(step["run"], str) else [str(c) for c in step["run"]]
                if command and command[0] in ("python", "python3"):
                    command[0] = sys.executable  # the interpreter the runner runs under (the venv's)
                self._call(command)

    def seeds(self, spec: RunSpec) -> list[int]:
        """The seeds of a configuration: its own, plus those its pairs earned (see :meth:`extra_seeds`)."""
        return sorted(set(spec.seeds) | self._extra.get(spec.name, set()))

    def finished_seeds(self, spec: RunSpec) -> list[int]:
        """The seeds of a configuration whose run folder under OUT is finished, extra seeds included."""
        prefix = f"{spec.name}_s"
        seeds = {
            int(p.name[len(prefix) :]) for p in self.study.out.glob(f"{prefix}*") if p.name[len(prefix) :].isdigit()
        }
        return sorted(s for s in seeds if run_finished(self.study.run_dir(spec.name, s)))

    def finished_runs(self) -> list[Path]:
        """Every finished run folder of the study's configurations, extra seeds included, in study order."""
        return [self.study.run_dir(spec.name, s) for spec in self.study.runs for s in self.finished_seeds(spec)]

    def recorded(self) -> dict[str, dict[str, Any]]:
        """The rows of the committed results (``RESULTS/results.json``) of the study's configurations
        whose run has no finished folder under OUT, by run name: runs done elsewhere."""
        if self._committed is None:
            path = self.study.results / "results.json" if self.study.results is not None else None
            try:
                self._committed = json.loads(path.read_text())["runs"] if path is not None and path.is_file() else []
            except (ValueError, KeyError, TypeError) as e:
                raise StudyError(f"{path} is not a study's results file ({e}); fix or remove it") from None
        names = {s.name for s in self.study.runs}
        kept = {}
        for r in self._committed:
            run = self.study.run_dir(r["group"], int(r["seed"])) if r.get("group") in names else None
            if run is not None and run.name == r["run"] and not run_finished(run):
                kept[r["run"]] = r
        return kept

    def done(self, name: str, seed: int) -> bool:
        """Finished here, or recorded in the committed results."""
        run = self.study.run_dir(name, seed)
        return run_finished(run) or run.name in self.recorded()

    def rows(self) -> list[dict[str, Any]]:
        """One row per finished run here and per recorded run, in study order, each with the commits
        that made it and its options' digest."""
        recorded = self.recorded()
        rows = []
        for spec in self.study.runs:
            here = set(self.finished_seeds(spec))
            seeds = here | {int(r["seed"]) for r in recorded.values() if r["group"] == spec.name}
            for seed in sorted(seeds):
                run = self.study.run_dir(spec.name, seed)
                if seed not in here:
                    rows.append(recorded[run.name])
                    continue
                row = summarize_run(run)
                info_path = run / "study_run.json"
                row["commits"] = (
                    sorted({c["commit"] for c in json.loads(info_path.read_text()).get("commits", []) if c["commit"]})
                    if info_path.is_file()
                    else []
                )
                recipe = run / "recipe.yaml"
                row["options_digest"] = (
                    options_digest(yaml.safe_load(recipe.read_text()), self._probe_options(spec, None))
                    if recipe.is_file()
                    else None
                )
                rows.append(row)
        return rows

    def extra_seeds(self) -> dict[str, set[int]]:
        """Seeds to add: both sides of a pair whose difference is within ``within`` standard errors
        on any of the chosen metrics get their next seed, until ``max`` seeds."""
        rule = self.study.extra_seeds
        if not rule:
            return {}
        summaries = self.rows()
        wanted: dict[str, set[int]] = {}
        for a, b in self.study.pairs:
            seeds_a, seeds_b = self.seeds(self.study.spec(a)), self.seeds(self.study.spec(b))
            if min(len(seeds_a), len(seeds_b)) >= rule["max"]:
                continue
            if not all(self.done(n, s) for n, ss in ((a, seeds_a), (b, seeds_b)) for s in ss):
                continue  # decide on complete evidence only
            diffs = [pair_difference(summaries, a, b, m) for m in rule["metrics"]]
            if any(d is not None and d["resolved_at"] is not None and d["resolved_at"] < rule["within"] for d in diffs):
                nxt = max(seeds_a + seeds_b) + 1
                wanted.setdefault(a, set()).add(nxt)
                wanted.setdefault(b, set()).add(nxt)
        return wanted

    def run(self, only: Sequence[str] | None = None, seeds: Sequence[int] | None = None) -> dict[str, Any]:
        """Everything the study still needs (of the configurations ``only`` and the ``seeds``
        given, if given), then the summary; returns it."""
        self.prepare()
        specs = [s for s in self.study.runs if only is None or s.name in only]
        while True:
            # Seed by seed, so that a study stopped half way has every configuration at its first seeds.
            for seed in sorted({seed for spec in specs for seed in self.seeds(spec)}):
                if seeds is not None and seed not in seeds:
                    continue
                for spec in specs:
                    if seed in self.seeds(spec):
                        self.pretrain(spec, seed)
                        self.probe(spec, seed)
            more = {} if self.dry_run else self.extra_seeds()
            grown = {n: s - self._extra.get(n, set()) for n, s in more.items()}
            if not any(grown.values()):
                break
            for name, added in grown.items():
                self.echo(f"== {name}: the pair is not resolved yet; seeds {sorted(added)} added")
                self._extra.setdefault(name, set()).update(added)
        # A seed the study never plans would otherwise be a silent no-op that looks like success.
        planned = {seed for spec in specs for seed in self.seeds(spec)}
        unplanned = sorted(set(seeds or ()) - planned)
        if unplanned:
            message = (
                f"--seeds {unplanned}: not a seed of {[s.name for s in specs]} (they run "
                f"{sorted(planned)}); a study runs the seeds its file gives (`seeds:`, or a run's own) "
                "and those its extra_seeds rule adds to an unresolved pair: add the seed to the file"
            )
            if not self.dry_run:
                raise StudyError(message)
            self.echo(f"== {message} (a dry run does not apply the extra_seeds rule)")
        return self.summarize()

    def summarize(self) -> dict[str, Any]:
        """results.json, summary.md and one kNN-per-epoch plot per pair, in OUT (and in ``results``)."""
        if self.dry_run:
            return {}
        recorded = sorted(self.recorded())
        if recorded:
            self.echo(
                f"== recorded in {self.study.results / 'results.json'} (no run folder here): {', '.join(recorded)}"
            )
        rows = self.rows()
        configs = [
            configuration_summary(rows, s.name) for s in self.study.runs if any(r["group"] == s.name for r in rows)
        ]
        pairs = [pair_summary(rows, a, b) for a, b in self.study.pairs]
        result = {"study": self.study.name, "runs": rows, "configurations": configs, "pairs": pairs}
        self.study.out.mkdir(parents=True, exist_ok=True)
        (self.study.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
        (self.study.out / "summary.md").write_text(study_markdown(configs, pairs))
        plots = self._plots(rows)
        if self.study.results is not None:
            self.study.results.mkdir(parents=True, exist_ok=True)
            for path in [self.study.out / "results.json", self.study.out / "summary.md", *plots]:
                shutil.copyfile(path, self.study.results / path.name)
        self.echo((self.study.out / "summary.md").read_text())
        return result

    def _plots(self, rows: list[dict[str, Any]]) -> list[Path]:
        try:
            from .plots import plot_pair
        except ImportError:  # matplotlib is optional
            return []
        written = []
        refs = {
            r["run"]: r["knn_final"]
            for r in rows
            if self.study.spec(r["group"]).reference and r["knn_final"] is not None
        }
        for a, b in self.study.pairs:
            curves = {name: [r["knn_by_epoch"] for r in rows if r["group"] == name] for name in (a, b)}
            if not all(curves.values()):
                continue
            path = self.study.out / f"knn_{a}_vs_{b}.png"
            try:
                plot_pair(curves, path, title=f"{self.study.name}: {a} vs {b}", references=refs)
            except ImportError:
                return written
            written.append(path)
        return written
