"""Run chapter notebooks with papermill, and report the freshness of their results.

``run_chapter`` validates the parameters in this process (so a typo fails
before a kernel starts), then executes ``notebooks/<id>.ipynb`` with results
and notebook both staged under ``runs/staging/<run id>/``. Only when every
cell succeeded are the results moved to ``results/<id>/<profile>/`` and the
executed notebook to ``book/chapters/<id>.ipynb`` (smoke: to scratch). The
notebook records the run id; ``status`` checks that the executed notebook
and the results come from the same run.
"""

from __future__ import annotations

import fcntl
import functools
import importlib
import json
import os
import re
import shutil
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from distillbook.core import catalog
from distillbook.core.paths import EXECUTED_DIR, REPO_ROOT, RUNS_DIR, checkpoints_dir, results_root as default_results_root
from distillbook.core.profiles import resolve_profile
from distillbook.core.provenance import FRESH, MISSING, STALE, check_fresh

STATUS_PROFILES = ("cpu", "gpu")


class RunFailed(RuntimeError):
    """A notebook raised; the partial notebook is kept for inspection."""


def params_class(chapter_id: str):
    """The pydantic parameter model of a written chapter."""
    chapter = catalog.chapter(chapter_id)
    if not chapter.written:
        raise ValueError(f"chapter {chapter.id!r} is planned: {chapter.notebook} does not exist")
    module = importlib.import_module(f"distillbook.chapters.{chapter.id.replace('-', '_')}")
    return module.Params


def notebook_parameter_names(notebook: Path) -> set[str]:
    """Names assigned in the notebook's cell tagged ``parameters``."""
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            return set(re.findall(r"^([A-Za-z_]\w*)\s*=", source, flags=re.M))
    raise ValueError(f"{notebook} has no code cell tagged 'parameters'")


def page_name(chapter_id: str, profile: str) -> str:
    """The executed notebook's file: ``<id>.ipynb`` for the book's cpu page (and smoke runs), ``<id>-gpu.ipynb``
    for the gpu run, a page of its own beside the cpu one (never over it)."""
    return f"{chapter_id}-gpu.ipynb" if profile == "gpu" else f"{chapter_id}.ipynb"


EXPERIMENTS_DIR = RUNS_DIR / "experiments"  # runs off a profile's preset: never the committed results
RUN_SETTINGS = frozenset({"device", "threads", "workers", "tracking"})  # how a run executes, not what it measures


def destinations(chapter_id: str, profile: str, overrides: dict[str, Any], *, replace: bool = False,
                 output_dir: Path | None = None, results_root: Path | None = None) -> tuple[Path, Path]:
    """Where a run's executed notebook and results go: (notebook folder, results root).

    The book's own runs (no overrides) write the executed chapter and committed results (smoke runs go to
    scratch). A run with parameters off the preset (other than the run settings: device, threads, workers,
    tracking) is an experiment: it writes under ``runs/experiments/``, leaving the committed results and page
    untouched, unless ``replace`` says it should replace them. Explicit folders win.
    """
    experiment = bool(set(overrides) - RUN_SETTINGS) and not replace and profile != "smoke"
    if experiment:
        book_pages = EXPERIMENTS_DIR / f"{chapter_id}-{profile}"
        book_results = book_pages / "results"
    else:
        book_pages = RUNS_DIR / "smoke" if profile == "smoke" else EXECUTED_DIR
        book_results = default_results_root(profile)
    return Path(output_dir or book_pages), Path(results_root or book_results)


DRY_RUN_DIR = RUNS_DIR / "dry-run"


def run_chapter(chapter_id: str, profile: str = "auto", overrides: dict[str, Any] | None = None, *,
                output_dir: Path | None = None, results_root: Path | None = None, replace: bool = False,
                kernel_name: str = "python3", log_output: bool = False, progress: bool = False,
                dry_run: int | None = None) -> dict[str, Any]:
    """Execute one chapter's notebook at ``profile``; return where it went and how long it took.

    Overrides make the run an experiment that leaves committed results alone (see :func:`destinations`).
    ``dry_run=k`` runs every stage at the profile's full sizes for ``k`` steps of each fit (timed, FLOPs and
    kernels counted, see :class:`~distillbook.core.training.DryRun`) and writes under ``runs/dry-run/``; the
    result then holds ``stages``, the projection of every stage to its planned steps (:func:`dry_run_stages`)."""
    if dry_run is not None and dry_run < 2:
        raise ValueError(f"dry_run must be >= 2 steps per fit (one to warm up, one to time), got {dry_run}")
    chapter = catalog.chapter(chapter_id)
    profile = resolve_profile(profile)
    overrides = dict(overrides or {})
    params = params_class(chapter.id).for_profile(profile, **overrides)  # fail fast, before any kernel starts
    from distillbook.core.runtime import resolve_device

    resolve_device(params.device)

    names = notebook_parameter_names(chapter.notebook)
    injected: dict[str, Any] = {"profile": profile}
    extra = {}
    for key, value in overrides.items():
        (injected if key in names else extra)[key] = value
    if extra:
        if "overrides" not in names:
            raise ValueError(f"{chapter.notebook.name} takes no 'overrides' dict for {sorted(extra)}")
        injected["overrides"] = extra

    output_dir, final_results = destinations(chapter.id, profile, overrides, replace=replace, output_dir=output_dir,
                                             results_root=results_root)
    if dry_run is not None:
        output_dir = final_results = DRY_RUN_DIR / f"{chapter.id}-{profile}"
        shutil.rmtree(output_dir, ignore_errors=True)
    run_id = uuid.uuid4().hex
    remove_abandoned_staging()
    staging = RUNS_DIR / "staging" / run_id
    staged_notebook = staging / f"{chapter.id}.ipynb"
    staging.mkdir(parents=True)
    lock = hold_staging_lock(staging)  # held until this run ends: the folder is in use
    started = time.perf_counter()
    import papermill

    from distillbook.core.results import replace_folder

    env = {"DISTILLBOOK_RESULTS_ROOT": str(staging / "results"), "DISTILLBOOK_RUN_ID": run_id}
    if dry_run is not None:
        from distillbook.core.training import DRY_RUN_ENV

        env[DRY_RUN_ENV] = f"{dry_run}:{staging / 'stages.jsonl'}"
    try:
        execute_notebook(chapter.notebook, staged_notebook, parameters=injected, env=env, kernel_name=kernel_name,
                         log_output=log_output, progress=progress)
        staged_results = staging / "results" / chapter.id / profile
        if not staged_results.exists():
            raise RunFailed(f"{chapter.id} ({profile}) ran but wrote no results: its last cell must call run.finish()")
        destination = output_dir / page_name(chapter.id, profile)
        tidy_executed_notebook(staged_notebook, run_id=run_id, profile=profile, source=chapter.notebook,
                               destination=destination)
        output_dir.mkdir(parents=True, exist_ok=True)
        (final_results / chapter.id).mkdir(parents=True, exist_ok=True)
        replace_folder(staged_results, final_results / chapter.id / profile)
        os.replace(staged_notebook, destination)
        if dry_run is not None:
            rows = [json.loads(line) for line in (staging / "stages.jsonl").read_text().splitlines()] \
                if (staging / "stages.jsonl").exists() else []
            (output_dir / "fits.json").write_text(json.dumps(rows, indent=1) + "\n")
    except papermill.PapermillExecutionError as err:
        failed = RUNS_DIR / "failed" / f"{chapter.id}-{profile}.ipynb"
        failed.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staged_notebook, failed)
        raise RunFailed(f"{chapter.id} ({profile}) failed in cell {err.exec_count}: {err.ename}: {err.evalue}\n"
                        f"partial notebook: {failed}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        lock.close()
    wall = round(time.perf_counter() - started, 1)
    out = {"chapter": chapter.id, "profile": profile, "notebook": str(destination),
           "results": str(final_results / chapter.id / profile), "wall_seconds": wall}
    if dry_run is None:
        shutil.rmtree(checkpoints_dir(chapter.id, profile), ignore_errors=True)
    else:
        fits = json.loads((output_dir / "fits.json").read_text())
        out["stages"] = dry_run_stages(fits)
        out["fit_seconds_measured"] = round(sum(f["seconds_per_step"] * f["steps_run"] for f in fits), 1)
        (output_dir / "stages.json").write_text(json.dumps(out, indent=1) + "\n")
    return out


def dry_run_stages(fits: list[dict]) -> list[dict]:
    """Per stage (a fit's name without its seed), over every seed: the planned steps, the projected seconds
    (planned steps x measured seconds per step) and the projected FLOPs and kernels of the whole stage."""
    stages: dict[str, dict] = {}
    for f in fits:
        s = stages.setdefault(f["stage"], {"stage": f["stage"], "fits": 0, "planned_steps": 0, "seconds": 0.0,
                                            "flops": 0, "kernels": 0, "flops_per_step": f["flops_per_step"]})
        s["fits"] += 1
        s["planned_steps"] += f["planned_steps"]
        s["seconds"] += f["planned_steps"] * f["seconds_per_step"]
        s["flops"] += f["planned_steps"] * (f["flops_per_step"] or 0)
        s["kernels"] += f["planned_steps"] * (f["kernels_per_step"] or 0)
    return sorted(stages.values(), key=lambda s: -s["seconds"])


def format_stages(out: dict) -> str:
    """The dry run's table: stages by projected time, then the totals."""
    lines = [f"{'stage':<34} {'fits':>4} {'steps':>8} {'GFLOP/step':>11} {'TFLOP':>8} {'kernels':>10} "
             f"{'projected s':>11}"]
    for s in out["stages"]:
        lines.append(f"{s['stage'][:34]:<34} {s['fits']:>4} {s['planned_steps']:>8} "
                     f"{(s['flops_per_step'] or 0) / 1e9:>11.3f} {s['flops'] / 1e12:>8.2f} {s['kernels']:>10.3g} "
                     f"{s['seconds']:>11.0f}")
    total = sum(s["seconds"] for s in out["stages"])
    lines.append(f"training, projected: {total:.0f} s ({sum(s['flops'] for s in out['stages']) / 1e12:.1f} TFLOP, "
                 f"{sum(s['kernels'] for s in out['stages']):.3g} kernels); the dry run took {out['wall_seconds']} s, "
                 f"{out['fit_seconds_measured']} s of it in its shortened fits (the rest, evaluation and sampling, "
                 "ran at full size)")
    return "\n".join(lines)


STAGING_LOCK = ".lock"


def hold_staging_lock(staging: Path):
    """Open ``staging/.lock`` and hold an exclusive lock on it; the lock ends with the returned file (or the
    process, however it dies)."""
    handle = open(staging / STAGING_LOCK, "w")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def remove_abandoned_staging() -> list[Path]:
    """Remove the staging folders of runs that are gone (killed before their own clean-up), keep the rest.

    A live run holds the lock on its folder's ``.lock`` (:func:`hold_staging_lock`); a folder whose lock can be
    taken, or that has had none for ten minutes, belongs to no running process. Returns the folders removed.
    """
    removed = []
    for folder in sorted((RUNS_DIR / "staging").glob("*")):
        if not folder.is_dir():
            continue
        if not (folder / STAGING_LOCK).exists() and time.time() - folder.stat().st_mtime < 600:
            continue  # a run that has made its folder but not yet its lock, or one from before locks
        try:
            with open(folder / STAGING_LOCK, "a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises while the run is alive
        except (BlockingIOError, FileNotFoundError):  # a live run's lock, or a folder gone meanwhile
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


# Warnings the kernel would print into the published pages. ``tqdm.auto`` (imported by transformers, diffusers
# and torchmetrics) warns "IProgress not found. Please update jupyter and ipywidgets" whenever it is imported in
# a Jupyter kernel without ipywidgets; the warning carries tqdm's absolute path under the virtual environment.
# The book does not want widget progress bars (a static page cannot show them), so the warning is noise here:
# filtered by its message through PYTHONWARNINGS, which the kernel reads at start-up, before any chapter import.
KERNEL_WARNING_FILTERS = ("ignore:IProgress not found",)


def kernel_environment(**values: str) -> dict[str, str]:
    """Environment variables of a chapter's kernel: ``values``, fixed hashing and plotting, quiet imports."""
    filters = [f for f in os.environ.get("PYTHONWARNINGS", "").split(",") if f]
    filters += [f for f in KERNEL_WARNING_FILTERS if f not in filters]
    return {"PYTHONHASHSEED": "0", "MPLBACKEND": "module://matplotlib_inline.backend_inline",
            "PYTHONWARNINGS": ",".join(filters), **values}


def kernel_config():
    """Configuration of the kernel manager papermill starts the kernel with.

    ipykernel (7.4 on) logs "Kernel is running over TCP without encryption ..." to stderr, so to the CLI's
    output, unless the manager provisions CurveZMQ keys. jupyter_client (8.10 on) does so when asked with
    ``transport_encryption`` and the kernelspec declares ``supported_encryption: curve`` (ipykernel's does):
    the kernel then runs encrypted and says nothing. "auto" keeps older kernelspecs working, unencrypted.
    """
    import zmq
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    config = Config()
    if KernelManager.class_traits().get("transport_encryption") is not None and zmq.has("curve"):
        config.KernelManager.transport_encryption = "auto"
    return config


@functools.cache
def kernel_manager_class() -> type:
    """jupyter_client's kernel manager, less the SIGINT it sends a kernel just before shutting it down.

    ``shutdown_kernel`` interrupts the kernel (SIGINT to its process group), then asks it to shut down.
    nbclient shuts the kernel down once the notebook has finished or failed, so the kernel is idle and
    ignores SIGINT, except when the signal lands while it is still finishing its last reply: then it logs
    "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel." to the CLI's stderr (seen at random on a
    loaded machine). Without the interrupt the kernel shuts down on the request alone; a kernel still busy
    (the CLI interrupted mid-cell) is terminated, with its process group, after ``shutdown_wait_time / 2``.
    """
    from jupyter_client.manager import AsyncKernelManager

    class QuietShutdownKernelManager(AsyncKernelManager):
        async def _async_interrupt_kernel(self) -> None:
            # Only shutdown calls this method under this name: AsyncKernelManager.interrupt_kernel is the base
            # class's function, so an interrupt asked for (nbclient's cell timeout) still goes through.
            if self.shutting_down:
                return
            await super()._async_interrupt_kernel()

    return QuietShutdownKernelManager


def execute_notebook(source: Path, target: Path, *, parameters: dict[str, Any] | None = None,
                     env: dict[str, str] | None = None, kernel_name: str = "python3", log_output: bool = False,
                     progress: bool = False) -> None:
    """Run ``source`` with papermill into ``target``, in ``source``'s folder, with :func:`kernel_environment`,
    :func:`kernel_config` and :func:`kernel_manager_class`. ``progress`` shows papermill's bar on stderr (cells
    done, elapsed, ETA)."""
    import papermill

    with _environment(**kernel_environment(**(env or {}))):
        papermill.execute_notebook(str(source), str(target), parameters=parameters or {}, kernel_name=kernel_name,
                                   cwd=str(Path(source).parent), progress_bar=progress, log_output=log_output,
                                   config=kernel_config(), kernel_manager_class=kernel_manager_class())


@contextmanager
def _environment(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _collapse_carriage_returns(text: str) -> str:
    """Keep what a terminal would show: for each line, the text after its last carriage return."""
    return "\n".join(line.rstrip("\r").rsplit("\r", 1)[-1] for line in text.split("\n"))


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository (POSIX), or only its file name when it lies outside."""
    path = Path(path).resolve()
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return path.name


def tidy_executed_notebook(path: Path, run_id: str, profile: str, source: Path | None = None,
                           destination: Path | None = None) -> None:
    """Record the run, collapse the injected-parameters cell on the page, keep only final progress-bar states.

    papermill records the absolute paths it read and wrote (``metadata.papermill.input_path`` and
    ``output_path``: the checkout and the staging folder); they become ``source`` and ``destination`` relative
    to the repository, so that a committed page names no machine's folders.
    """
    nb = json.loads(path.read_text(encoding="utf-8"))
    nb["metadata"]["distillbook"] = {"run_id": run_id, "profile": profile}
    if profile == "gpu":
        _mark_title(nb, " (gpu profile)")
    papermill_meta = nb["metadata"].get("papermill", {})
    for key, value in (("input_path", source), ("output_path", destination or path)):
        if papermill_meta.get(key):
            papermill_meta[key] = repo_relative(value if value is not None else papermill_meta[key])
    for cell in nb["cells"]:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "injected-parameters" in tags and "hide-cell" not in tags:
            tags.append("hide-cell")
        merged: list[dict] = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                text = out["text"] if isinstance(out["text"], str) else "".join(out["text"])
                if merged and merged[-1].get("output_type") == "stream" and merged[-1]["name"] == out["name"]:
                    merged[-1]["text"] += text
                    continue
                out["text"] = text
            merged.append(out)
        for out in merged:
            if out.get("output_type") == "stream":
                out["text"] = _collapse_carriage_returns(out["text"])
        if "outputs" in cell:
            cell["outputs"] = merged
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _mark_title(nb: dict, suffix: str) -> None:
    """Append ``suffix`` to the notebook's title (its first ``# `` heading), so that a second page of one chapter
    (the gpu run's) is told apart in the table of contents."""
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        lines = ("".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]).split("\n")
        for i, line in enumerate(lines):
            if line.startswith("# ") and not line.endswith(suffix):
                lines[i] = line + suffix
                cell["source"] = "\n".join(lines)
                return


def status(profiles: tuple[str, ...] = STATUS_PROFILES) -> list[dict[str, Any]]:
    """Per written chapter and profile: ``state`` (fresh / stale / missing), ``reason``, run time and claims."""
    from distillbook.core.results import load_results

    rows = []
    for chapter in catalog.written_chapters():
        for profile in profiles:
            results = load_results(chapter.id, profile)
            row = {"chapter": chapter.id, "profile": profile, "state": MISSING, "reason": "no committed results",
                   "wall_seconds": None, "claims": {}}
            if results is not None:
                state, reason = check_fresh(results["provenance"], chapter.notebook)
                if state == FRESH:
                    state, reason = _check_executed(chapter.id, profile, results["provenance"])
                row.update(state=state, reason=reason, wall_seconds=results["provenance"].get("wall_seconds"),
                           claims=dict(Counter(c["verdict"] for c in results["claims"])))
            rows.append(row)
    return rows


def _check_executed(chapter_id: str, profile: str, provenance: dict) -> tuple[str, str]:
    """The profile's executed notebook must exist, show this profile and come from the same run as the results."""
    name = page_name(chapter_id, profile)
    path = EXECUTED_DIR / name
    if not path.exists():
        return STALE, f"no executed notebook book/chapters/{name}"
    shown = json.loads(path.read_text(encoding="utf-8"))["metadata"].get("distillbook", {})
    if shown.get("profile") != profile:
        return STALE, f"book/chapters/{name} shows the {shown.get('profile')} profile, not {profile}"
    if shown.get("run_id") != provenance.get("run_id"):
        return STALE, f"book/chapters/{name} and results/{chapter_id}/{profile} come from different runs"
    return FRESH, ""


def stale_chapters(profile: str) -> list[str]:
    return [r["chapter"] for r in status((profile,)) if r["state"] in (STALE, MISSING)]


__all__ = ["FRESH", "MISSING", "STALE", "RunFailed", "run_chapter", "status", "stale_chapters"]
