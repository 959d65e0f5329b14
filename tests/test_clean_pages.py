"""Executed pages show the chapter, not the machine: no absolute paths, no warnings of the runtime.

The committed pages in ``book/chapters`` are checked as they are; the pipeline's kernel on tiny notebooks
(seconds each); a smoke run through the CLI for what it prints. ``test_notebooks`` applies the same
``page_problems`` to every chapter's smoke run.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from conftest import page_problems
from distillbook.core import pipeline
from distillbook.core.paths import EXECUTED_DIR, NOTEBOOKS_DIR, REPO_ROOT

PAGES = sorted(EXECUTED_DIR.glob("*.ipynb"))


def warning_lines(text: str) -> list[str]:
    """Lines of process output that are warnings: logged (``WARNING |``) or issued (``...Warning: ...``)."""
    return [line for line in text.splitlines() if "WARNING" in line or "Warning:" in line]


def test_page_problems_finds_paths_and_runtime_warnings():
    def page(*texts, **metadata):
        cells = [nbformat.v4.new_code_cell("x", outputs=[nbformat.v4.new_output("stream", name="stderr", text=t)])
                 for t in texts]
        return json.loads(nbformat.writes(nbformat.v4.new_notebook(cells=cells, metadata=metadata)))

    png = f"iVBORw0KGgo+/tmp/x+{REPO_ROOT}/y+/root/z=="  # base64 may spell anything there: not a path
    clean = page("loss 0.31 after 40 steps\n", "see results/foundations/cpu/metrics.json and ../notebooks/x.ipynb\n",
                 "https://ipywidgets.readthedocs.io/en/stable/user_install.html\n",
                 papermill={"input_path": "notebooks/foundations.ipynb",
                            "output_path": "book/chapters/foundations.ipynb"})
    clean["cells"][0]["outputs"].append({"output_type": "display_data", "metadata": {}, "data": {"image/png": png}})
    assert page_problems(clean) == []

    for text in ("/work/main/.venv/lib/python3.11/site-packages/tqdm/auto.py:21: TqdmWarning: IProgress",
                 "wrote /tmp/ipykernel_123/456.py", "/root/.cache/huggingface", "file:///home/me/x.png",
                 f"results in {REPO_ROOT}/results", "C:\\Users\\me\\book",
                 "IProgress not found. Please update jupyter"):
        assert len(page_problems(page("fine\n", text))) == 1, text
    assert page_problems(page(papermill={"input_path": f"{REPO_ROOT}/notebooks/foundations.ipynb"}))


@pytest.mark.parametrize("page", PAGES, ids=[p.stem for p in PAGES])
def test_committed_page_is_clean(page):
    nb = json.loads(page.read_text(encoding="utf-8"))
    assert page_problems(nb) == [], f"{page.name} shows the machine it ran on; rerun it with `distillbook run`"
    papermill = nb["metadata"].get("papermill", {})
    assert papermill.get("input_path") == f"notebooks/{page.name}"
    assert papermill.get("output_path") == f"book/chapters/{page.name}"


def test_tidy_makes_papermill_paths_relative(tmp_path):
    staged = tmp_path / "staging" / "foundations.ipynb"
    staged.parent.mkdir()
    nb = nbformat.v4.new_notebook(metadata={"papermill": {"input_path": str(NOTEBOOKS_DIR / "foundations.ipynb"),
                                                          "output_path": str(staged), "parameters": {}}})
    staged.write_text(nbformat.writes(nb))
    pipeline.tidy_executed_notebook(staged, run_id="r", profile="smoke", source=NOTEBOOKS_DIR / "foundations.ipynb",
                                    destination=EXECUTED_DIR / "foundations.ipynb")
    meta = json.loads(staged.read_text())["metadata"]["papermill"]
    assert meta["input_path"] == "notebooks/foundations.ipynb"
    assert meta["output_path"] == "book/chapters/foundations.ipynb"
    pipeline.tidy_executed_notebook(staged, run_id="r", profile="smoke", source=NOTEBOOKS_DIR / "foundations.ipynb",
                                    destination=tmp_path / "executed" / "foundations.ipynb")
    assert json.loads(staged.read_text())["metadata"]["papermill"]["output_path"] == "foundations.ipynb"


@pytest.mark.slow
def test_kernel_is_quiet_but_keeps_a_chapters_own_warnings(tmp_path):
    """The pipeline's kernel: no TqdmWarning on ``import tqdm.auto`` (as transformers, diffusers and torchmetrics
    do), no transport warning on stderr; a warning of the chapter's own still shows."""
    source, target = tmp_path / "tiny.ipynb", tmp_path / "tiny-executed.ipynb"
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import tqdm.auto\nprint('imported', x)"),
        nbformat.v4.new_code_cell("import warnings\nwarnings.warn('a chapter warns on purpose')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source.write_text(nbformat.writes(nb))
    code = ("import sys; from pathlib import Path; from distillbook.core import pipeline; "
            "pipeline.execute_notebook(Path(sys.argv[1]), Path(sys.argv[2]), parameters={'x': 2})")
    proc = subprocess.run([sys.executable, "-c", code, str(source), str(target)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert warning_lines(proc.stdout + proc.stderr) == []
    pipeline.tidy_executed_notebook(target, run_id="r", profile="smoke", source=source)
    executed = json.loads(target.read_text())
    outputs = [o.get("text", "") for c in executed["cells"] for o in c.get("outputs", [])]
    assert "imported 2\n" in outputs
    assert any("UserWarning: a chapter warns on purpose" in o for o in outputs), outputs
    # the deliberate warning names the kernel's temp file of the cell; nothing else may name the machine
    on_purpose = next(i for i, c in enumerate(executed["cells"]) if "on purpose" in "".join(c["source"]))
    assert [p for p in page_problems(executed) if not p.startswith(f"notebook.cells[{on_purpose}].outputs")] == []


@pytest.mark.slow
def test_finished_kernel_is_shut_down_without_an_interrupt(tmp_path):
    """jupyter_client interrupts a kernel before shutting it down; landing while the kernel finishes its last
    reply, the SIGINT makes it log "KeyboardInterrupt caught in kernel" on the CLI's stderr. A process the
    kernel started (in the kernel's process group, which the SIGINT goes to) records whether one was sent."""
    source, target, marker = tmp_path / "tiny.ipynb", tmp_path / "tiny-executed.ipynb", tmp_path / "sigint"
    child = ("import signal, sys, time\n"
             "signal.signal(signal.SIGINT, lambda *_: open(sys.argv[1], 'w').write('SIGINT'))\n"
             "print('ready', flush=True)\n"
             "time.sleep(20)\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        f"import subprocess, sys\nchild = subprocess.Popen([sys.executable, '-c', {child!r}, {str(marker)!r}],"
        " stdout=subprocess.PIPE, text=True)\nassert child.stdout.readline() == 'ready\\n'\nprint(child.pid)")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    source.write_text(nbformat.writes(nb))
    pipeline.execute_notebook(source, target)
    pid = int("".join(json.loads(target.read_text())["cells"][0]["outputs"][0]["text"]))
    try:
        deadline = time.monotonic() + 2
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not marker.exists(), "the finished kernel was sent SIGINT before its shutdown"
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.slow
def test_cli_smoke_run_prints_no_warnings_and_writes_a_clean_page(scratch):
    proc = subprocess.run([sys.executable, "-m", "distillbook", "run", "foundations", "--profile", "smoke"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert warning_lines(proc.stdout + proc.stderr) == [] and proc.stderr == ""
    written = Path(proc.stdout.strip().splitlines()[-1].split("-> ", 1)[1])
    nb = json.loads(written.read_text(encoding="utf-8"))
    assert page_problems(nb) == []
    assert nb["metadata"]["papermill"]["input_path"] == "notebooks/foundations.ipynb"
