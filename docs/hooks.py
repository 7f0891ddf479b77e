"""The docs site's build hook (mkdocs.yml `hooks:`), and the house's import table on the command line.

The site is built from the repository's own paths, so a link works the same on GitHub and on the site: `on_files`
drops what mkdocs collected from docs/ by itself and adds, with their repo-relative paths as src paths, README.md
(the home page), docs/*.md, the READMEs of experiments/, benchmarks/ and launch/, the Markdown under
experiments/results/, the figures under experiments/results/ and dql/data/policies/, and the source and data
files that pages link to.

`on_page_markdown` replaces `<!-- house -->` in docs/architecture.md with the table of who imports whom between
the floors of `[tool.importlinter]` in pyproject.toml, counted from the code by grimp (import-linter's graph).

    python docs/hooks.py     # prints the same table
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: import-linter brings tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- house -->"
ARCHITECTURE_PAGE = "docs/architecture.md"

# Pages: (folder, glob) relative to the root. README.md becomes the site's index page.
PAGES = [(".", "README.md"), ("docs", "*.md"), ("experiments", "README.md"), ("benchmarks", "README.md"),
         ("launch", "README.md"), ("experiments/results", "**/*.md")]
# Static files a page may link to or show.
STATIC = [(".", "pyproject.toml"), ("experiments/results", "**/*.png"), ("dql/data/policies", "**/*.png")] + [
    (folder, f"**/*.{ext}") for folder in ("dql", "experiments", "launch", "benchmarks")
    for ext in ("py", "json", "jsonl", "sh", "csv")]
# Pages listed in no nav entry on purpose: the studies' own notes and tables.
NOT_IN_NAV = ("experiments/results/",)

log = logging.getLogger("mkdocs.hooks.dql")


def repo_files(patterns) -> list[str]:
    """Repo-relative paths (POSIX) matching (folder, glob) patterns, without caches; sorted, each once."""
    found = set()
    for folder, pattern in patterns:
        for path in (ROOT / folder).glob(pattern):
            rel = path.relative_to(ROOT)
            if path.is_file() and not any(part.startswith((".", "__pycache__")) for part in rel.parts):
                found.add(rel.as_posix())
    return sorted(found)


def on_files(files, config):
    """Replace what mkdocs collected from docs/ with the repository's own files under their repo paths."""
    from mkdocs.structure.files import File, InclusionLevel

    docs_dir = Path(config.docs_dir).resolve()
    for file in list(files):
        if file.src_dir and Path(file.src_dir).resolve() == docs_dir:
            files.remove(file)
    for src, is_page in [(p, True) for p in repo_files(PAGES)] + [(p, False) for p in repo_files(STATIC)]:
        inclusion = InclusionLevel.UNDEFINED
        if is_page and src.startswith(NOT_IN_NAV):
            inclusion = InclusionLevel.NOT_IN_NAV
        files.append(File(src, str(ROOT), config.site_dir, config.use_directory_urls, inclusion=inclusion))
    return files


# ---- the house: floors from pyproject.toml, imports from grimp.


def floors() -> list[list[str]]:
    """The layers of `[tool.importlinter]`, top floor first; each a list of modules ("a | b" -> [a, b])."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "layers")
    return [[name.strip() for name in layer.split("|")] for layer in contract["layers"]]


def import_counts():
    """(floors, counts, outside): counts[(i, j)] is the number of (importer, imported) module pairs with the
    importer on floor i and the imported module on floor j, numbered from the bottom (0) up; same-floor pairs
    are split into "within" one module's subtree (fine) and "between" two modules of one floor (forbidden).
    `outside` lists the modules on no floor (a root package's __init__) with their imports."""
    import grimp

    layers = floors()[::-1]  # floor 0 is the bottom one
    roots = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph(*roots, cache_dir=None)

    def place(module):
        """(floor, the floor's module holding it) or None."""
        best = None
        for number, layer in enumerate(layers):
            for name in layer:
                inside = module == name or module.startswith(name + ".")
                if inside and (best is None or len(name) > len(best[1])):
                    best = (number, name)
        return best

    counts, outside = Counter(), Counter()
    for importer in graph.modules:
        source = place(importer)
        for imported in graph.find_modules_directly_imported_by(importer):
            target = place(imported)
            if target is None:
                continue
            if source is None:
                outside[(importer, target[0])] += 1
            elif source[0] != target[0]:
                counts[(source[0], target[0])] += 1
            elif source[1] == target[1]:
                counts[(source[0], "within")] += 1
            else:
                counts[(source[0], "between")] += 1
    return layers, counts, outside


def violations(layers, counts) -> list[str]:
    """Imports that point up, or across a floor: what import-linter's contract forbids."""
    found = []
    for (i, j), n in sorted(counts.items(), key=str):
        if j == "between":
            found.append(f"{n} between modules of floor {i} ({' | '.join(layers[i])})")
        elif j != "within" and j > i:
            found.append(f"{n} from floor {i} ({' | '.join(layers[i])}) up to floor {j} ({' | '.join(layers[j])})")
    return found


def house_table(markdown: bool = True) -> str:
    """Rows: the importing floor; columns: the imported floor; both from the bottom floor (0) up. A floor
    imports only floors below it, so every count lies below the diagonal; the diagonal holds the imports
    inside one module's subtree (and, flagged with !, any between two modules of one floor)."""
    layers, counts, outside = import_counts()
    n = len(layers)

    def cell(i, j):
        if i == j:
            within, between = counts.get((i, "within"), 0), counts.get((i, "between"), 0)
            text = f"({within})" if within else "·"
            return text + ((f" **{between}**" if markdown else f" {between}!") if between else "")
        value = counts.get((i, j), 0)
        if not value:
            return "·"
        return (f"**{value}**" if markdown else f"{value}!") if j > i else str(value)

    names = [" \\| ".join(layer) if markdown else " | ".join(layer) for layer in layers]
    rows = [[f"{i}", names[i]] + [cell(i, j) for j in range(n)] for i in range(n)]
    header = ["floor", "modules"] + [str(j) for j in range(n)]
    lines = []
    if markdown:
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---:|---|" + "---:|" * n)
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        widths = [max(len(r[k]) for r in rows + [header]) for k in range(len(header))]

        def fmt(row):
            return "  ".join(c.ljust(w) if k == 1 else c.rjust(w) for k, (c, w) in enumerate(zip(row, widths)))

        lines += [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]
    total = sum(v for (i, j), v in counts.items() if j not in ("within", "between"))
    bad = violations(layers, counts)
    lines.append("")
    lines.append(f"{total} imports between floors, all pointing down." if not bad else
                 "Imports against the floors: " + "; ".join(bad) + ".")
    if outside:
        lines.append("On no floor: " + ", ".join(
            f"`{module}` imports floor {floor} ({count})" if markdown else f"{module} imports floor {floor} ({count})"
            for (module, floor), count in sorted(outside.items())) + ".")
    return "\n".join(lines)


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != ARCHITECTURE_PAGE:
        return markdown
    missing = [name for layer in floors() for name in layer if f"`{name}`" not in markdown]
    if missing:
        log.warning(f"{ARCHITECTURE_PAGE} does not describe {', '.join(missing)}, a floor of pyproject.toml's "
                    "[tool.importlinter] layers")
    if MARKER not in markdown:
        log.warning(f"{ARCHITECTURE_PAGE} has no {MARKER} marker for the import table")
        return markdown
    table = house_table(markdown=True)
    if "Imports against the floors" in table:
        log.warning(f"{ARCHITECTURE_PAGE}: {table.splitlines()[-1]}")
    return markdown.replace(MARKER, table)


if __name__ == "__main__":
    print("Who imports whom: rows import columns; floors from the bottom (0) up; (n) on the diagonal: imports")
    print("inside one module's subtree; n! marks an import against the floors.\n")
    print(house_table(markdown=False))
