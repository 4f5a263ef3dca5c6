"""The type-ignore ratchet: no new ``# type: ignore`` without a reason, in any file mypy strict does not cover.

A ``# type: ignore`` comment is *bare* unless a second comment follows it on the same line and gives the
reason, e.g. ``x = f()  # type: ignore[arg-type]  # f's stub is wrong upstream``. The bare ones of every Python
file under inspector/, trainer/, jobs/, gui/ and tests/ are counted per file and compared with the committed
baseline (``.ci/type_ignores.baseline.json``): a file whose count grew fails the check (a new file's baseline
is 0). Counts that fell are reported; ``--update`` writes the lower numbers into the baseline (never higher
ones: a count can only ratchet down).

Run from the repository root: ``python .ci/type_ignores.py`` (exit 1 when a count grew, 0 otherwise);
``--root DIR`` checks another checkout, ``--update`` lowers the baseline to today's counts.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import sys
import tokenize
from collections.abc import Iterator
from pathlib import Path

FOLDERS = ("inspector", "trainer", "jobs", "gui", "tests")
BASELINE = Path(".ci") / "type_ignores.baseline.json"
IGNORE_RE = re.compile(r"#\s*type:\s*ignore(\[[^\]]*\])?(?P<rest>.*)$")
REASON_RE = re.compile(r"^\s*#\s*\S")


def comments(source: str) -> Iterator[str]:
    """The comments of a Python source (never text inside strings)."""
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                yield tok.string
    except (tokenize.TokenError, SyntaxError):
        return


def bare_ignores(source: str) -> int:
    """How many ``# type: ignore`` comments of ``source`` give no reason after them."""
    n = 0
    for comment in comments(source):
        match = IGNORE_RE.search(comment)
        if match is not None and not REASON_RE.match(match.group("rest")):
            n += 1
    return n


def count(root: Path) -> dict[str, int]:
    """Bare ignores per file (relative POSIX path), files with none left out."""
    counts: dict[str, int] = {}
    for folder in FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            n = bare_ignores(path.read_text(encoding="utf-8", errors="replace"))
            if n:
                counts[path.relative_to(root).as_posix()] = n
    return counts


def compare(counts: dict[str, int], baseline: dict[str, int]) -> tuple[list[str], list[str]]:
    """(files whose count grew, files whose count fell), each as a printable line."""
    grew = [
        f"{f}: {n} bare '# type: ignore' (baseline {baseline.get(f, 0)})"
        for f, n in sorted(counts.items())
        if n > baseline.get(f, 0)
    ]
    fell = [f"{f}: {counts.get(f, 0)} (baseline {b})" for f, b in sorted(baseline.items()) if counts.get(f, 0) < b]
    return grew, fell


def lowered(counts: dict[str, int], baseline: dict[str, int]) -> dict[str, int]:
    """The baseline ratcheted down to ``counts``: a file's number never goes up, files at 0 are dropped."""
    out = {f: min(b, counts.get(f, 0)) for f, b in baseline.items()}
    return {f: n for f, n in sorted(out.items()) if n}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent, help="repository root")
    parser.add_argument("--update", action="store_true", help="lower the baseline to today's counts")
    parser.add_argument("--init", action="store_true", help="write today's counts as the baseline (first time)")
    args = parser.parse_args(argv)
    baseline_path = args.root / BASELINE
    counts = count(args.root)
    if args.init:
        baseline_path.write_text(json.dumps(counts, indent=1, sort_keys=True) + "\n")
        print(f"baseline written: {sum(counts.values())} bare ignores in {len(counts)} files")
        return 0
    baseline: dict[str, int] = json.loads(baseline_path.read_text()) if baseline_path.is_file() else {}
    grew, fell = compare(counts, baseline)
    for line in grew:
        print(f"NEW  {line}: give each new one a reason ('# type: ignore[code]  # why') or fix the type")
    for line in fell:
        print(f"DOWN {line}" + ("" if args.update else ": run `python .ci/type_ignores.py --update` to lock it in"))
    if args.update:
        baseline_path.write_text(json.dumps(lowered(counts, baseline), indent=1, sort_keys=True) + "\n")
    print(f"{sum(counts.values())} bare '# type: ignore' in {len(counts)} files (baseline {sum(baseline.values())})")
    return 1 if grew else 0


if __name__ == "__main__":
    sys.exit(main())
