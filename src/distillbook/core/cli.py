"""``python -m distillbook`` (or ``distillbook``): list, run, status, build."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _parse_value(text: str) -> Any:
    """A JSON value (numbers, lists, true/false, quoted strings), else the text itself as a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"-p takes key=value, got {pair!r}")
        out[key.strip()] = _parse_value(value.strip())
    return out


def cmd_list(args) -> int:
    from distillbook.core import catalog

    parts = {p.letter: p.title for p in catalog.PARTS}
    current = None
    for chapter in catalog.CHAPTERS:
        if chapter.part != current:
            current = chapter.part
            print(f"\n{'Part ' + current + ': ' + parts[current] if current else 'Foundations'}")
        state = "written" if chapter.written else "planned"
        papers = ", ".join(map(str, chapter.papers)) or "-"
        print(f"  {chapter.id:<26} {state:<8} papers {papers:<18} {chapter.title}")
    return 0


def cmd_run(args) -> int:
    from distillbook.core import catalog, pipeline
    from distillbook.core.profiles import resolve_profile

    profile = resolve_profile(args.profile)
    overrides = _parse_overrides(args.param)
    if args.all:
        chapters = [c.id for c in catalog.written_chapters()]
    elif args.stale:
        chapters = pipeline.stale_chapters(profile)
    else:
        chapters = [catalog.chapter(c).id for c in args.chapters]
    if not chapters:
        print(f"nothing to run at profile {profile}: every chapter is fresh" if args.stale else "no chapter given")
        return 0 if args.stale else 2
    for chapter in chapters:  # validate every chapter's parameters before running any
        pipeline.params_class(chapter).for_profile(profile, **overrides)
    for chapter in chapters:
        print(f"running {chapter} at profile {profile} ...", flush=True)
        # cells done and ETA on a terminal (not in logs or captured output), unless the notebook's output streams
        out = pipeline.run_chapter(chapter, profile, overrides, replace=args.replace, log_output=args.verbose,
                                   progress=sys.stderr.isatty() and not args.verbose, dry_run=args.dry_run)
        print(f"  results -> {out['results']}", flush=True)
        print(f"  done in {out['wall_seconds']} s -> {out['notebook']}", flush=True)
        if args.dry_run is not None:
            print(pipeline.format_stages(out), flush=True)
    return 0


def cmd_status(args) -> int:
    from distillbook.core import pipeline

    rows = pipeline.status()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            claims = ", ".join(f"{n} {v}" for v, n in sorted(r["claims"].items())) or "-"
            wall = f"{r['wall_seconds']:.0f} s" if r["wall_seconds"] is not None else "-"
            print(f"{r['chapter']:<26} {r['profile']:<5} {r['state']:<8} {wall:>7}  claims: {claims}"
                  + (f"\n{'':<41}{r['reason']}" if r["state"] != "fresh" else ""))
    if args.check:
        bad = [r for r in rows if r["profile"] == "cpu" and r["state"] != "fresh"]
        for r in bad:
            print(f"error: {r['chapter']} cpu results are {r['state']}: {r['reason']}", file=sys.stderr)
        # gpu results need a GPU to refresh, which CI lacks: a stale one is marked, on the site too, not failed
        for r in rows:
            if r["profile"] == "gpu" and r["state"] == "stale":
                print(f"warning: {r['chapter']} gpu results are stale: {r['reason']}", file=sys.stderr)
        return 1 if bad else 0
    return 0


def cmd_build(args) -> int:
    from distillbook.core import site

    site.build(strict=not args.allow_warnings)
    return 0


def cmd_layout(args) -> int:
    from distillbook.core import layout

    if args.check:
        fresh = layout.update_readme(check=True)
        print("README layout is up to date" if fresh else "README layout is out of date: run `python -m distillbook layout`")
        return 0 if fresh else 1
    layout.update_readme()
    print(f"wrote the layout section of {layout.README}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="distillbook", description="Distillation, Reproduced: run and build the book")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="parts, chapters and their papers").set_defaults(func=cmd_list)

    run = sub.add_parser("run", help="execute chapter notebooks with papermill and write their results")
    run.add_argument("chapters", nargs="*", help="chapter ids (see `list`)")
    group = run.add_mutually_exclusive_group()
    group.add_argument("--all", action="store_true", help="every written chapter")
    group.add_argument("--stale", action="store_true", help="chapters whose results at this profile are stale or missing")
    run.add_argument("--profile", default="auto", help="smoke | cpu | gpu | auto (gpu with CUDA, else cpu)")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                     help="override a parameter (a JSON value, else a string), e.g. -p seeds=[0,1,2]")
    run.add_argument("--replace", action="store_true",
                     help="with -p overrides, replace the committed results and page (default: write under "
                          "runs/experiments/ and leave them untouched)")
    run.add_argument("-v", "--verbose", action="store_true", help="stream the notebook's output")
    run.add_argument("--dry-run", nargs="?", type=int, const=6, default=None, metavar="STEPS",
                     help="run every stage at the profile's full sizes for STEPS (default 6) steps of each fit, "
                          "timed, with FLOPs and kernels per step, and project each stage to its planned steps "
                          "(writes under runs/dry-run/, never the book's results)")
    run.set_defaults(func=cmd_run)

    st = sub.add_parser("status", help="fresh / stale / missing results per chapter and profile")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--check", action="store_true",
                    help="exit 1 unless every cpu result is fresh (stale gpu results are warned about)")
    st.set_defaults(func=cmd_status)

    build = sub.add_parser("build", help="generate the paper map and scoreboard, then build the site")
    build.add_argument("--allow-warnings", action="store_true", help="do not treat Sphinx warnings as errors")
    build.set_defaults(func=cmd_build)

    lay = sub.add_parser("layout", help="regenerate the README's map of the library (methods, files, chapters)")
    lay.add_argument("--check", action="store_true", help="exit 1 if the README's map is out of date")
    lay.set_defaults(func=cmd_layout)

    args = parser.parse_args(argv)
    if args.command == "run" and args.chapters and (args.all or args.stale):
        parser.error("give chapter ids or --all/--stale, not both")
    try:
        return args.func(args)
    except (ValueError, KeyError) as err:  # bad input: one clear line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # a failed notebook or site build: its own message says where to look
        print(f"error: {err}", file=sys.stderr)
        return 1
