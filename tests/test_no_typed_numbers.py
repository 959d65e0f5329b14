"""No typed numbers in a chapter's prose (issue 13, item 8).

Every decimal or percentage in a source notebook's markdown must come from the run through myst-nb's
``glue`` (``{glue:text}`name`` ...), sit in math or code, or be a number the *paper* reports, listed below
with where it comes from. Parameters quoted in prose are glued too, so the gpu profile's page reads right.
"""

import json
import re

import pytest

from distillbook.core.paths import NOTEBOOKS_DIR

MATH = re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$", re.S)
GLUE = re.compile(r"\{glue(?::[a-z]+)?\}`[^`]*`")
CODE = re.compile(r"`[^`\n]*`")
NUMBER = re.compile(r"(?<![\w.#§])(\d+\.\d+|\d+(?:\.\d+)?\s?%)")

# Numbers the papers report, quoted as theirs (chapter -> {number: source}); 95% is the interval's level.
PAPER_NUMBERS: dict[str, dict[str, str]] = {
    "*": {"95%": "the confidence level of every interval", "100%": "perfect accuracy, the ceiling"},
    "lm-kd-dynamics": {"2.5": "capacity-gap paper: best teacher about 2.5x the student's size"},
    "foundations": {"2.5": "Hinton et al. §3: T in 2.5-4 works best for small nets",
                    "0.72": "Hinton et al. §3: 146 -> 74 MNIST test errors of 10,000 is 0.72 points"},
    "dataset-distillation": {"0.5": "AST's expert code: loss ramp from 0.5", "0.9": "... to 0.9"},
    "clip-prompt-learning": {"0.0025": "PromptSRC's learning rate"},
}


def typed_numbers(notebook) -> list[str]:
    nb = json.loads(notebook.read_text(encoding="utf-8"))
    allowed = {**PAPER_NUMBERS["*"], **PAPER_NUMBERS.get(notebook.stem, {})}
    found = []
    for cell in nb["cells"]:
        if cell["cell_type"] != "markdown":
            continue
        text = CODE.sub("", GLUE.sub("", MATH.sub("", "".join(cell["source"]))))
        for line in text.splitlines():
            for m in NUMBER.finditer(line):
                if m.group(1).replace(" ", "") not in allowed:
                    found.append(f"{m.group(1)!r} in: …{line[max(0, m.start() - 50):m.end() + 20]}…")
    return found


@pytest.mark.parametrize("notebook", sorted(NOTEBOOKS_DIR.glob("*.ipynb")), ids=lambda p: p.stem)
def test_prose_numbers_are_glued(notebook):
    assert typed_numbers(notebook) == []


def test_the_check_sees_a_typed_number(tmp_path):
    nb = {"cells": [{"cell_type": "markdown", "source": ["SDS reaches 23.0 dB and 70% of views; "
                                                          "{glue:text}`psnr:.1f` dB, $x = 0.5$, `lr=0.1`."]}]}
    path = tmp_path / "toy.ipynb"
    path.write_text(json.dumps(nb))
    assert [f.split(" in:")[0] for f in typed_numbers(path)] == ["'23.0'", "'70%'"]
