"""The documentation site as a reader sees it: every page of the built site (mkdocs build
--strict) is loaded in headless Chromium at a desktop width and checked by
tests/docs_site_check.js: no code block, table or page scrolls sideways, no literal `\\|` left by
a table's escaped pipe, doctest examples in API docstrings are code blocks (not nested
blockquotes), API headings are of a moderate size, and every internal link or image resolves to
a file of the built site, and its #anchor to an element of that page.

The browser is the system's Chromium (Debian package `chromium`; or $CHROMIUM); without one the
tests are skipped, saying so.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from chromium import Browser, find_chromium

ROOT = Path(__file__).resolve().parents[1]
CHECK = (Path(__file__).parent / "docs_site_check.js").read_text()
WIDTH, HEIGHT = 1280, 900  # a laptop's browser window, both sidebars shown

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium to render the docs with: install the `chromium` package (apt-get install "
    "chromium) or set CHROMIUM to a Chrome/Chromium executable",
)


def _build(site: Path, config: Path) -> None:
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    if mkdocs is None:
        pytest.fail("mkdocs is not installed: run scripts/setup")
    p = subprocess.run(
        [mkdocs, "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=config.parent,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr[-3000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None
    with Browser(CHROMIUM) as b:
        yield b.page(WIDTH, HEIGHT)


def pages_of(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if p.name != "404.html")


def render(browser: Browser, page: Path) -> dict[str, Any]:
    browser.navigate(page.as_uri())
    result: dict[str, Any] = browser.evaluate(CHECK)
    return result


def link_problems(site: Path, rendered: dict[Path, dict[str, Any]]) -> dict[Path, list[str]]:
    """Links (and images) of each page that do not resolve in the built site: a missing file or
    page, or an #anchor its page lacks. Links elsewhere than the site (http:, mailto:) are not
    followed."""
    ids = {page: set(r["ids"]) for page, r in rendered.items()}
    out: dict[Path, list[str]] = {}
    for page, r in rendered.items():
        for link in r["links"]:
            url = urlsplit(link["url"])
            if url.scheme != "file":
                continue
            target = Path(unquote(url.path))
            what = f'link "{link["text"]}" {link["where"]} to {link["url"].removeprefix(site.as_uri())}'
            if not target.is_relative_to(site):
                out.setdefault(page, []).append(f"{what}: points outside the site")
                continue
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                out.setdefault(page, []).append(f"{what}: no such page or file")
            elif url.fragment and target in ids and unquote(url.fragment) not in ids[target]:
                out.setdefault(page, []).append(f"{what}: no anchor #{unquote(url.fragment)} there")
    return out


def report(site: Path, problems: dict[Path, list[str]]) -> str:
    lines = []
    for page, found in sorted(problems.items()):
        lines.append(f"{page.relative_to(site)}:")
        lines.extend(f"  - {p}" for p in found)
    return "\n".join(lines)


@needs_chromium
@pytest.mark.slow
def test_every_page_renders_right(tmp_path: Path, browser: Browser) -> None:
    site = tmp_path / "site"
    _build(site, ROOT / "mkdocs.yml")
    pages = pages_of(site)
    assert site / "api" / "index.html" in pages and len(pages) >= 10
    rendered = {page: render(browser, page) for page in pages}
    problems = {page: r["problems"] for page, r in rendered.items() if r["problems"]}
    for page, found in link_problems(site, rendered).items():
        problems.setdefault(page, []).extend(found)
    if problems:
        pytest.fail(f"rendering problems at {WIDTH} px:\n{report(site, problems)}", pytrace=False)
    # the checks looked at what they are meant to: API objects and the code blocks of their
    # docstrings (fenced Python examples, tests/test_api_open.py; a `>>>` example would be
    # fenced by scripts/griffe_doctests.py, test_doctest_blocks_become_code)
    api = (site / "api" / "index.html").read_text()
    reference = api[api.index('class="doc doc-contents') :]
    assert "doc-heading" in api and '<div class="language-python highlight">' in reference


# A page with every fault the checks look for, built with the site's own theme and extensions: the
# checks must find each one (and nothing in the parts written right).
BAD_PAGE = """# Faults

Fine text with `inline code` and a [good link](#faults).

```bash
git theta-like diff --format json --threshold 0.001 HEAD~1 HEAD -- model.safetensors > changes.json
```

```
tensor encoder.layer.0.attention.self.query.weight F32 [384,384] 589824 2f1e…9a 7c0d…e1 540118 planes wraps
```

| command | what |
|---|---|
| `a \\| b` | escaped pipe inside code |

>>> merged = merge_tensors(base, ours, theirs, "ties", density=0.2)

\\>>> print(merged)

{wide_table}

[missing page](nowhere.md#x) and [missing anchor](#no-such-anchor) and [other](good.md#no-such)

<h2 class="doc doc-heading">commit(state_dict: Mapping[str, Any], path: str | os.PathLike[str], message: str,
repo: str | os.PathLike[str] | Repo = '.', format: str = 'safetensors',
metadata: dict[str, str] | None = None, update_worktree: bool = False) -> str</h2>
""".replace(
    "{wide_table}",
    "\n".join(["|" + " col |" * 13, "|" + "---|" * 13, "|" + " 87.0 MiB |" * 13]),
)


@needs_chromium
def test_checks_find_each_fault(tmp_path: Path, browser: Browser) -> None:
    project = tmp_path / "project"
    (project / "docs").mkdir(parents=True)
    # the site's theme and markdown, without its pages and API plug-in (quick to build)
    (project / "mkdocs.yml").write_text(
        f"INHERIT: {ROOT / 'mkdocs.yml'}\ndocs_dir: docs\nstrict: false\n"
        "nav: [index.md, good.md, bad.md]\nplugins: [search]\n"
    )
    for asset in (ROOT / "docs").glob("*.*"):  # the site's stylesheets (extra_css) and the like
        if asset.suffix != ".md":
            shutil.copy(asset, project / "docs")
    (project / "docs" / "index.md").write_text("# Home\n\n[faults](bad.md)\n")
    (project / "docs" / "good.md").write_text("# Good\n\nNothing wrong here.\n")
    (project / "docs" / "bad.md").write_text(BAD_PAGE)
    site = project / "site"
    p = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--site-dir", str(site)],
        cwd=project,
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    rendered = {page: render(browser, page) for page in pages_of(site)}
    bad, good = site / "bad" / "index.html", site / "good" / "index.html"
    assert rendered[good]["problems"] == []
    found = "\n".join(rendered[bad]["problems"])
    assert "code block" in found and "scrolls sideways" in found and "longest line has 99" in found
    assert "wraps" not in found  # plain text (program output) wraps instead
    assert 'literal "\\|"' in found
    assert "nested blockquotes" in found
    assert "a doctest line outside a code block" in found and ">>> print(merged)" in found
    assert "table " in found and "(widest row: 87.0 MiB" in found
    assert 'API heading "commit(' in found and "px, over 1.3 x the text's" in found and "lines" in found
    links = link_problems(site, rendered)
    assert set(links) == {bad}
    broken = "\n".join(links[bad])
    assert "nowhere" in broken and "no such page" in broken
    assert "no anchor #no-such-anchor" in broken and "no anchor #no-such there" in broken
    assert "good link" not in broken


def test_doctest_blocks_become_code() -> None:
    spec = importlib.util.spec_from_file_location("griffe_doctests", ROOT / "scripts" / "griffe_doctests.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = (
        "Summary.\n\n    >>> x = f(1,\n    ...       2)\n    3\n\nMore.\n\n```python\n>>> kept\n```\n>>> last"
    )
    assert module.fence_doctests(text) == (
        "Summary.\n\n    ```pycon\n    >>> x = f(1,\n    ...       2)\n    3\n    ```\n\nMore.\n\n"
        "```python\n>>> kept\n```\n```pycon\n>>> last\n```"
    )
    assert module.fence_doctests("no examples") == "no examples"
