"""The project explains itself from its own files: the README is a front page, every relative link in it and in
docs/ lands on a file (and heading) the repository holds, and no code cites a document the repository lacks."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE = [p for d in ("glm4", "common", "sources", "convert", "runtimes", "serve", "benchmarks", "scripts", "tests")
        for p in sorted((ROOT / d).glob("*.py"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, fence = set(), False
    for line in page.read_text(encoding="utf-8").splitlines():
        fence ^= line.startswith("```")
        if not fence and (m := re.match(r"#{1,6} (.+)", line)):
            found.add(slug(m.group(1)))
    return found


def test_the_readme_is_a_front_page():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 300
    assert {"architecture.md", "convert.md", "runtimes.md", "serve.md", "bench.md", "results.md"} <= {
        p.name for p in PAGES}


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]+))?\)", text):
            if target.startswith(("http:", "https:", "mailto:")):
                continue
            path = (page.parent / target).resolve() if target else page
            if not path.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{page.name}: {target}#{anchor}")
    assert not broken, broken


def test_code_cites_only_documents_the_repository_holds():
    """Documents under docs/ and the project's capitalised ones (README.md, RESULTS.md …) named in code exist here;
    OUT.md is an output name in glm-bench's help, not a citation."""
    missing = []
    for path in CODE:
        text = path.read_text(encoding="utf-8")
        for name in set(re.findall(r"\bdocs/[\w-]+\.md\b", text)):
            if not (ROOT / name).exists():
                missing.append((path.name, name))
        for name in set(re.findall(r"\b[A-Z][A-Z_]+\.md\b", text)) - {"OUT.md"}:
            if not list(ROOT.glob(f"**/{name}")):
                missing.append((path.name, name))
    assert not missing, missing
