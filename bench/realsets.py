"""Real retrieval sets built offline from text that installed packages ship (written by others, not by us).

    .venv/bin/python bench/realsets.py --out /tmp/realsets --train 400 --val 150
    # -> /tmp/realsets/<set>/{train,val}.json (EmbeddingQA JSON), one dir per set

Sets (licence notes in docs/benchmarks.md):
- `docstrings`: the summary line of a Python docstring (stdlib and site-packages modules) -> the rest of
  that docstring (its body). Only summaries of 4+ words whose body has 20+ words, and bodies that do not
  repeat the summary.
- `manpages`: a man page's NAME line (`ls - list directory contents`, without the command name) -> the first
  paragraphs of its DESCRIPTION section (roff markup stripped), from /usr/share/man/man1 and man8.
- `docsections`: a section title of a package's long description (the Markdown/reST README in its
  `*.dist-info/METADATA`) together with the package name -> that section's text.

Each set is split by document into train and validation (no query of a validation document is trained on);
validation queries retrieve over the validation documents plus distractors (the training documents), so the
corpus is the whole set. Sampling is seeded; the same installed packages give the same sets.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import json
import random
import re
import sys
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path

Pair = tuple[str, str]  # (query, document)
MAX_DOC_CHARS = 1500
MAX_PER_FAMILY = 20


def _words(text: str) -> int:
    return len(text.split())


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# ---------------------------------------------------------------- docstrings
def _py_files(limit_files: int, seed: int) -> list[Path]:
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(sysconfig.get_paths()["purelib"])]
    files: list[Path] = []
    for root in roots:
        for path in root.rglob("*.py"):
            parts = set(path.parts)
            if parts & {"test", "tests", "testing", "_vendor", "idle_test", "site-packages-test"}:
                continue
            files.append(path)
    files.sort()
    random.Random(seed).shuffle(files)
    return files[:limit_files]


def docstring_pairs(limit_files: int = 4000, seed: int = 0) -> Iterator[Pair]:
    seen: set[str] = set()
    for path in _py_files(limit_files, seed):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError, ValueError):
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            doc = ast.get_docstring(node)
            if not doc or "\n\n" not in doc:
                continue
            summary, body = doc.split("\n\n", 1)
            summary, body = _clean(summary), _clean(body)
            if not (4 <= _words(summary) <= 30) or _words(body) < 20 or summary.lower() in body.lower():
                continue
            if summary in seen or ">>>" in body[:40] or summary.endswith(":"):
                continue
            seen.add(summary)
            yield summary, body[:MAX_DOC_CHARS]


# ---------------------------------------------------------------- man pages
_ROFF_FONT = re.compile(r"\\f[BIRPC]|\\f\(\w\w|\\f\[\w*\]")
_ROFF_ESC = re.compile(r"\\[hvwlLxoDXNZk]'[^']*'|\\[-e&|^/,]|\\\(\w\w|\\\*\(?\w\w?|\\s[-+]?\d")


def _roff_text(lines: list[str]) -> list[str]:
    """Paragraphs of plain text from roff lines (macros dropped, fonts and escapes stripped)."""
    paras: list[str] = []
    cur: list[str] = []
    for raw in lines:
        line = _ROFF_ESC.sub(lambda m: "-" if m.group(0) == "\\-" else "", _ROFF_FONT.sub("", raw))
        if line.startswith((".PP", ".P", ".LP", ".TP", ".IP", ".sp", ".br")) or not line.strip():
            if cur:
                paras.append(_clean(" ".join(cur)))
                cur = []
            if line.startswith(".IP") and len(line.split()) > 1:
                cur.append(line.split(None, 1)[1].strip('"'))
            continue
        if line.startswith(("'", '.\\"', '."')):
            continue
        if line.startswith("."):
            macro, _, rest = line.partition(" ")
            if macro in (".B", ".I", ".BR", ".IR", ".RB", ".RI", ".BI", ".IB", ".SM", ".SB"):
                cur.append(rest.replace('"', ""))
            continue
        cur.append(line)
    if cur:
        paras.append(_clean(" ".join(cur)))
    return [p for p in paras if p]


def _sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    name = ""
    for line in text.splitlines():
        if line.startswith((".SH", ".Sh")):
            name = line[3:].strip().strip('"').upper()
            out.setdefault(name, [])
        elif name:
            out[name].append(line)
    return out


def manpage_pairs(root: Path = Path("/usr/share/man"), seed: int = 0) -> Iterator[Pair]:
    files = sorted([*(root / "man1").glob("*.gz"), *(root / "man8").glob("*.gz")])
    random.Random(seed).shuffle(files)
    seen: set[str] = set()
    families: dict[str, int] = {}
    for path in files:
        family = re.split(r"[-_.]", path.name, maxsplit=1)[0]
        if families.get(family, 0) >= MAX_PER_FAMILY:
            continue  # e.g. the thousands of gcloud pages: at most MAX_PER_FAMILY of one command family
        try:
            text = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
        except (OSError, EOFError):
            continue
        if text.startswith(".so "):
            continue  # an alias of another page
        secs = _sections(text)
        name = " ".join(_roff_text(secs.get("NAME", [])))
        parts = re.split(r"\s+-+\s+", name, maxsplit=1)
        if len(parts) != 2:
            continue
        query = _clean(parts[1])
        desc = _roff_text(secs.get("DESCRIPTION", []))
        body = " ".join(desc)[:MAX_DOC_CHARS]
        if _words(query) < 3 or _words(body) < 25 or query.lower() in seen:
            continue
        seen.add(query.lower())
        families[family] = families.get(family, 0) + 1
        yield query, body


# ---------------------------------------------------------------- package documentation sections
_MD_HEADING = re.compile(r"^(#{1,4})\s+(.+?)\s*#*$")
_RST_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+])\1{2,}\s*$")
_SKIP_TITLES = {
    "license",
    "licence",
    "installation",
    "install",
    "changelog",
    "changes",
    "contributing",
    "authors",
    "credits",
    "table of contents",
    "contents",
    "links",
    "support",
    "acknowledgements",
    "requirements",
    "history",
    "release notes",
    "citation",
    "contributors",
}


def _readme_sections(text: str) -> Iterator[tuple[str, str]]:
    lines = text.splitlines()
    title, body = "", list[str]()
    i = 0
    while i < len(lines):
        line = lines[i]
        md = _MD_HEADING.match(line)
        rst = i + 1 < len(lines) and line.strip() and _RST_UNDERLINE.match(lines[i + 1]) is not None
        if md or rst:
            if title:
                yield title, "\n".join(body)
            title = md.group(2) if md else line.strip()
            body = []
            i += 1 if md else 2
            continue
        body.append(line)
        i += 1
    if title:
        yield title, "\n".join(body)


def _metadata_description(path: Path) -> tuple[str, str]:
    raw = path.read_text(encoding="utf-8", errors="replace")
    head, _, desc = raw.partition("\n\n")
    name = next((ln.split(":", 1)[1].strip() for ln in head.splitlines() if ln.startswith("Name:")), "")
    return name, desc


def docsection_pairs(seed: int = 0) -> Iterator[Pair]:
    site = Path(sysconfig.get_paths()["purelib"])
    metas = sorted(site.glob("*.dist-info/METADATA"))
    random.Random(seed).shuffle(metas)
    seen: set[str] = set()
    for meta in metas:
        try:
            pkg, desc = _metadata_description(meta)
        except OSError:
            continue
        for title, body in _readme_sections(desc):
            t = _clean(re.sub(r"[`*_\[\]]|\(http\S*\)|<[^>]+>", "", title))
            text = _clean(re.sub(r"```.*?```|<[^>]+>|!\[[^\]]*\]\([^)]*\)", " ", body, flags=re.S))
            if t.lower() in _SKIP_TITLES or _words(t) < 2 or _words(text) < 30 or re.match(r"v?\d", t):
                continue
            query = f"{pkg}: {t}"
            if query in seen:
                continue
            seen.add(query)
            yield query, text[:MAX_DOC_CHARS]


SETS: dict[str, Callable[..., Iterator[Pair]]] = {
    "docstrings": docstring_pairs,
    "manpages": manpage_pairs,
    "docsections": docsection_pairs,
}


# ---------------------------------------------------------------- datasets
def build(
    pairs: list[Pair], n_train: int, n_val: int, seed: int = 0, distractors: int | None = None
) -> tuple[dict[str, object], dict[str, object]]:
    """EmbeddingQA train / validation, one query per document: validation queries retrieve over their own
    documents plus `distractors` (default 2 x n_val) documents no training or validation query points at."""
    extra = 2 * n_val if distractors is None else distractors
    uniq: dict[str, str] = {}
    docs_seen: set[str] = set()
    for q, d in pairs:
        if d not in docs_seen and q not in uniq:
            uniq[q] = d
            docs_seen.add(d)
    items = sorted(uniq.items())
    random.Random(seed).shuffle(items)
    want = n_train + n_val + extra
    if len(items) < n_train + n_val:
        raise SystemExit(f"only {len(items)} pairs available, {n_train + n_val} asked")
    items = items[:want]
    val_items, train_items = items[:n_val], items[n_val : n_val + n_train]
    distract = items[n_val + n_train :]

    def ds(rows: list[Pair], prefix: str, more: list[Pair]) -> dict[str, object]:
        corpus = {f"{prefix}d{i}": d for i, (_, d) in enumerate(rows)}
        corpus.update({f"x{i}": d for i, (_, d) in enumerate(more)})
        return {
            "queries": {f"{prefix}q{i}": q for i, (q, _) in enumerate(rows)},
            "corpus": corpus,
            "relevant_docs": {f"{prefix}q{i}": [f"{prefix}d{i}"] for i in range(len(rows))},
            "mode": "text",
        }

    return ds(train_items, "t", []), ds(val_items, "v", distract)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--sets", nargs="*", default=list(SETS), choices=list(SETS))
    p.add_argument("--train", type=int, default=400, help="Training pairs per set.")
    p.add_argument("--val", type=int, default=150, help="Validation queries per set.")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for name in args.sets:
        pairs = list(SETS[name](seed=args.seed))
        train, val = build(pairs, args.train, args.val, args.seed)
        out = Path(args.out) / name
        out.mkdir(parents=True, exist_ok=True)
        (out / "train.json").write_text(json.dumps(train), encoding="utf-8")
        (out / "val.json").write_text(json.dumps(val), encoding="utf-8")
        print(
            f"{name}: {len(pairs)} candidate pairs -> {out} (train {args.train}, val {args.val})",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
