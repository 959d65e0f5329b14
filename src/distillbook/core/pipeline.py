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


def run_chapter(chapter_id: str, profile: str = "auto", overrides: dict[str, Any] | None = None, *,
                output_dir: Path | None = None, results_root: Path | None = None, replace: bool = False,
                kernel_name: str = "python3", log_output: bool = False, progress: bool = False) -> dict[str, Any]:
    """Execute one chapter's notebook at ``profile``; return where it went and how long it took.

    Overrides make the run an experiment that leaves committed results alone (see :func:`destinations`)."""
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
    except papermill.PapermillExecutionError as err:
        failed = RUNS_DIR / "failed" / f"{chapter.id}-{profile}.ipynb"
        failed.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(staged_notebook, failed)
        raise RunFailed(f"{chapter.id} ({profile}) failed in cell {err.exec_count}: {err.ename}: {err.evalue}\n"
                        f"partial notebook: {failed}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        lock.close()
    shutil.rmtree(checkpoints_dir(chapter.id, profile), ignore_errors=True)
    return {"chapter": chapter.id, "profile": profile, "notebook": str(destination),
            "results": str(final_results / chapter.id / profile),
            "wall_seconds": round(time.perf_counter() - started, 1)}


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
