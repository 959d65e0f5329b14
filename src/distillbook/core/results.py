"""A chapter run: its parameters, per-seed metrics, claims and provenance.

A notebook opens a :class:`Run` right after its parameters cell and closes it
with :meth:`Run.finish` in its last cell, which writes
``results/<chapter>/<profile>/{metrics,claims,provenance}.json`` as one unit:
the three files go into a temp folder that then replaces the old one. A run
that fails before ``finish`` leaves the previous results as they were (and
``distillbook run`` stages even that, moving results and executed notebook
into place together only when the whole notebook succeeded).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distillbook.core import devices
from distillbook.core.claims import VERDICTS, format_mean_std
from distillbook.core.params import ChapterParams
from distillbook.core.paths import NOTEBOOKS_DIR, checkpoints_dir, results_root
from distillbook.core.provenance import git_commit, imported_modules, notebook_hashes, package_versions, sha256_bytes
from distillbook.core.runtime import deterministic_algorithms, resolve_device, set_threads
from distillbook.core.tracking import Tracker

RESULT_FILES = ("metrics.json", "claims.json", "provenance.json")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_results(folder: Path, files: dict[str, Any]) -> None:
    """Write ``files`` as one unit: into a temp sibling folder, then swapped in for ``folder``."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.new-"))
    try:
        for name, obj in files.items():
            atomic_write_json(staging / name, obj)
        replace_folder(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_folder(new: Path, folder: Path) -> None:
    """Move ``new`` to ``folder``, replacing it; the old folder is removed only once the new one is in place."""
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(folder, old)
    try:
        os.replace(new, folder)
    except BaseException:
        if old is not None:
            os.replace(old, folder)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def results_dir(chapter: str, profile: str) -> Path:
    return results_root(profile) / chapter / profile


def load_results(chapter: str, profile: str) -> dict[str, Any] | None:
    """``{"metrics", "claims", "provenance"}`` of a chapter and profile, or ``None`` if absent."""
    folder = results_dir(chapter, profile)
    if not all((folder / f).exists() for f in RESULT_FILES):
        return None
    return {f.removesuffix(".json"): json.loads((folder / f).read_text()) for f in RESULT_FILES}


class Run:
    """Opened at the top of a chapter notebook, finished at its end."""

    def __init__(self, chapter: str, params: ChapterParams):
        if not (NOTEBOOKS_DIR / f"{chapter}.ipynb").exists():
            raise ValueError(f"chapter={chapter!r} has no notebook {NOTEBOOKS_DIR / chapter}.ipynb")
        self.chapter = chapter
        self.params = params
        self.profile = params.profile
        self.started = time.perf_counter()
        set_threads(params.threads)
        deterministic_algorithms()
        self.device = resolve_device(params.device)
        devices.set_run_device(self.device)  # every fit of the run trains there, and refuses a model elsewhere
        devices.set_run_precision(params.precision)
        self.device_check = devices.enabled_for(params.profile, self.device)
        if self.device_check:
            devices.start_check()
        self.run_id = os.environ.get("DISTILLBOOK_RUN_ID") or uuid.uuid4().hex
        self.code = imported_modules()  # hashed now, as the code that runs; finish() checks it is unchanged
        notebook = NOTEBOOKS_DIR / f"{chapter}.ipynb"
        self.notebook = notebook_hashes(notebook)
        self.per_seed: dict[int, dict[str, Any]] = {int(s): {} for s in params.seeds}
        self.health_rows: list[dict[str, Any]] = []
        self.tracker = Tracker(params.tracking, name=f"{chapter}-{params.profile}", group=chapter,
                               config=params.model_dump())

    @property
    def seeds(self) -> list[int]:
        return list(self.params.seeds)

    def checkpoint(self, name: str, seed: int) -> Path:
        """Checkpoint file of one ``fit`` in this run (git-ignored ``runs/checkpoints``).

        Keyed by the parameters, the notebook's code and the library modules
        imported at the start of the run, so a change to any of them never
        resumes an old checkpoint; the pipeline removes a chapter's
        checkpoints after a successful run.
        """
        params = {k: v for k, v in self.params.model_dump().items() if k != "tracking"}
        identity = {"params": params, "code": self.code, "notebook": self.notebook["code_cells"]}
        key = sha256_bytes(json.dumps(identity, sort_keys=True).encode())[:16]
        return checkpoints_dir(self.chapter, self.profile) / key / f"{name}-seed{seed}.pt"

    def fit(self, name: str, seed: int, model: torch.nn.Module, loss_fn, next_batch, *, steps: int,
            optimizer: torch.optim.Optimizer, **kwargs):
        """:func:`distillbook.core.training.fit` with this run's checkpoint, tracker and naming (``seed<k>/<name>``)."""
        from distillbook.core.training import fit

        return fit(model, loss_fn, next_batch, steps=steps, optimizer=optimizer, seed=seed,
                   checkpoint=self.checkpoint(name, seed), tracker=self.tracker, desc=f"seed{seed}/{name}",
                   progress=False, **kwargs)

    def record(self, seed: int, **metrics: float | list[float]) -> None:
        """Store measured numbers of one seed (scalars or equal-length curves)."""
        if seed not in self.per_seed:
            raise KeyError(f"seed {seed} is not one of this run's seeds {self.seeds}")
        for k, v in metrics.items():
            self.per_seed[seed][k] = _plain(v)
        self.tracker.summary({f"seed{seed}/{k}": v for k, v in self.per_seed[seed].items() if k in metrics})

    def values(self, name: str) -> list:
        """Per-seed values of a recorded metric, in seed order."""
        missing = [s for s, m in self.per_seed.items() if name not in m]
        if missing:
            raise KeyError(f"metric {name!r} not recorded for seeds {missing}")
        return [self.per_seed[s][name] for s in self.seeds]

    def health(self, component: str, metric: str, measured: str, *, lower_is_better: bool,
               references: dict[str, str | float] | None = None, note: str = "") -> None:
        """A row of the test-bed health table: a teacher, prior or base model against its oracle or floor.

        ``measured`` and each reference name a recorded per-seed scalar metric
        (or give a number, e.g. a ceiling of 1.0). The row stores their seed
        means and stds, so a reader sees whether the component leaves a claim
        room above its oracle or floor.
        """
        def stats(x):
            v = np.asarray(self.values(x) if isinstance(x, str) else [x], dtype=float)
            return {"source": x if isinstance(x, str) else "constant", "mean": float(v.mean()),
                    "std": float(v.std(ddof=1)) if v.size > 1 else 0.0}

        row = {"component": component, "metric": metric, "lower_is_better": lower_is_better,
               "measured": stats(measured), "references": {k: stats(v) for k, v in (references or {}).items()},
               "note": note}
        self.health_rows.append(row)

    def health_markdown(self, digits: int = 3) -> str:
        """The computed test-bed health table (component vs oracle / floor / ceiling)."""
        if not self.health_rows:
            raise ValueError("no health rows recorded: call run.health(...) for each teacher, prior or base model")
        rows = ["| component | metric | measured (mean ± std) | references | note |", "|---|---|---|---|---|"]
        for r in self.health_rows:
            refs = "; ".join(f"{k}: {format_mean_std(v['mean'], v['std'], digits)}" for k, v in r["references"].items())
            arrow = "lower is better" if r["lower_is_better"] else "higher is better"
            rows.append(f"| {r['component']} | {r['metric']} ({arrow}) | "
                        f"{format_mean_std(r['measured']['mean'], r['measured']['std'], digits)} | {refs or '—'} | "
                        f"{r['note']} |")
        return "\n".join(rows)

    def figure(self, name: str, fig) -> None:
        """Send a chapter figure to the tracker (the notebook shows it inline)."""
        self.tracker.log_figure(name, fig)

    def aggregate(self) -> dict[str, dict[str, Any]]:
        names = sorted({k for m in self.per_seed.values() for k in m})
        out = {}
        for name in names:
            try:
                x = np.asarray(self.values(name), dtype=float)
            except (KeyError, ValueError):
                continue
            out[name] = {"mean": _plain(x.mean(axis=0)), "std": _plain(x.std(axis=0, ddof=1) if len(x) > 1 else np.zeros_like(x[0])),
                         "n": int(len(x))}
        return out

    def finish(self, claims: Iterable[dict]) -> dict[str, Any]:
        """Write metrics, claims and provenance; return the provenance."""
        claims = list(claims)
        ids = {c.get("id") for c in claims}
        recorded = {k for m in self.per_seed.values() for k in m}
        for c in claims:
            if c.get("verdict") not in VERDICTS:
                raise ValueError(f"claim {c.get('id')!r} has no computed verdict")
            diagnosis = c.get("diagnosis")
            if diagnosis and diagnosis not in ids and diagnosis not in recorded:
                raise ValueError(f"claim {c['id']!r}: diagnosis {diagnosis!r} is neither a claim of this chapter nor a "
                                 "recorded metric")
        wall = time.perf_counter() - self.started
        modules = imported_modules()
        changed = sorted(m for m, digest in self.code.items() if modules.get(m) != digest)
        if changed:
            raise RuntimeError(f"library modules changed while the run was going: {', '.join(changed)}; rerun")
        if notebook_hashes(NOTEBOOKS_DIR / f"{self.chapter}.ipynb") != self.notebook:
            raise RuntimeError(f"notebooks/{self.chapter}.ipynb changed while the run was going; rerun")
        provenance = {
            "run_id": self.run_id,
            "chapter": self.chapter,
            "profile": self.profile,
            "parameters": self.params.model_dump(),
            "overrides": self.params.overrides_from_preset(),
            "git_commit": git_commit(),
            "packages": package_versions(),
            "device": _device_name(self.device),
            "device_check": self.device_check,
            "threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "wall_seconds": round(wall, 2),
            "peak_memory_mb": _peak_memory_mb(self.device),
            "notebook": self.notebook,
            "modules": modules,
        }
        metrics = {"chapter": self.chapter, "profile": self.profile, "seeds": self.seeds,
                   "per_seed": {str(s): m for s, m in self.per_seed.items()}, "aggregate": self.aggregate(),
                   "health": self.health_rows}
        write_results(results_dir(self.chapter, self.profile),
                      {"metrics.json": metrics, "claims.json": claims, "provenance.json": provenance})
        self.tracker.summary({f"claims/{c['id']}": c["verdict"] for c in claims})
        self.tracker.finish()
        return provenance


def _plain(v):
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().numpy()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def _peak_memory_mb(device: torch.device) -> dict[str, float]:
    out = {"host_rss": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if children:  # seed workers (distillbook.core.parallel): the largest one
        out["worker_rss"] = round(children / 1024, 1)
    if device.type == "cuda":
        out["cuda_allocated"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out
