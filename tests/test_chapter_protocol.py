"""Every written chapter follows one protocol (see ``distillbook.chapters``): same modules, same names, same
signatures, presets that hold only what differs between profiles, and a notebook that calls the protocol."""

import importlib
import inspect
import json

import pytest

from distillbook.chapters import PROTOCOL
from distillbook.core import catalog
from distillbook.core.params import ChapterParams
from distillbook.core.profiles import PROFILES

WRITTEN = [c.id for c in catalog.written_chapters()]


def _package(chapter_id):
    return importlib.import_module(f"distillbook.chapters.{chapter_id.replace('-', '_')}")


@pytest.mark.parametrize("chapter_id", WRITTEN)
def test_the_chapter_is_a_package_with_the_protocols_modules(chapter_id):
    package = _package(chapter_id)
    assert hasattr(package, "__path__"), f"{chapter_id} should be a package (params, experiment, claims, figures)"
    for module in (*PROTOCOL, "figures"):
        importlib.import_module(f"{package.__name__}.{module}")
    assert package.CHAPTER == chapter_id
    assert issubclass(package.Params, ChapterParams)
    figures = importlib.import_module(f"{package.__name__}.figures")
    assert any(name.startswith("plot_") for name in dir(figures)), "figures holds the plot_* functions"


@pytest.mark.parametrize("chapter_id", WRITTEN)
def test_the_protocols_functions_have_one_signature(chapter_id):
    package = _package(chapter_id)
    for module_name, names in PROTOCOL.items():
        module = importlib.import_module(f"{package.__name__}.{module_name}")
        for name, parameters in names.items():
            assert hasattr(module, name), f"{module.__name__} lacks {name}"
            assert getattr(package, name) is getattr(module, name), f"the package re-exports {name}"
            if parameters is None:
                continue
            signature = inspect.signature(getattr(module, name))
            positional = tuple(p.name for p in signature.parameters.values()
                               if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
            assert positional == parameters, f"{module.__name__}.{name}{signature} should take {parameters}"


@pytest.mark.parametrize("chapter_id", WRITTEN)
def test_presets_hold_only_what_differs_between_profiles(chapter_id):
    presets = _package(chapter_id).Params.PRESETS
    assert set(presets) == set(PROFILES)
    shared = set.intersection(*(set(p) for p in presets.values()))
    same = sorted(k for k in shared if k != "seeds" and len({json.dumps(presets[prof][k], sort_keys=True)
                                                           for prof in PROFILES}) == 1)
    assert not same, f"{chapter_id}: {same} are equal in every profile; make them field defaults"


@pytest.mark.parametrize("chapter_id", WRITTEN)
def test_the_notebook_calls_the_protocol(chapter_id):
    nb = json.loads(catalog.chapter(chapter_id).notebook.read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    for call in ("chapter.build_bed(run)", "chapter.run_seed", "chapter.evaluate_claims(run)",
                 "chapter.record_health(run)", "chapter.glue_values(run, bed)", "chapter.summary_markdown(run, results)"):
        assert call in code, f"notebooks/{chapter_id}.ipynb should call {call}"
