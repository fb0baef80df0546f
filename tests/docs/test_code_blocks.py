"""Every code block of README.md and docs/*.md runs as written (the rules: docs/development.md).

Python blocks run in a fresh interpreter; shell blocks run when an HTML comment right above them says
``<!-- test: run -->`` and are reported as skipped, with the comment's reason, when it says
``<!-- test: skip REASON -->``. A page's blocks run in order in one working folder (a later block uses the run an
earlier one trained), with ``../shared`` and ``benchmarks/`` reachable from it as from the repository root.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.paths import REPO, SHARED

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PYTHON = {"python", "py"}
SHELL = {"bash", "sh", "shell", "console"}
DATA = {"text", "yaml", "yml", "csv", "json", "jsonl", "toml", "ini", "html", "xml"}
FIXTURES = {"photos"}
BLOCK_TIMEOUT_S = 600

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
_COMMENT = re.compile(r"<!--\s*test:(?P<body>.*?)-->", re.S)


@dataclass
class Block:
    """One fenced block of a page and the test comment above it."""

    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    comment: str | None = None  # the text after "test:" of the comment right above, or None
    action: str = ""  # "run", "skip" or "" (data blocks)
    reason: str = ""
    appends: list[tuple[list[str], str]] = field(default_factory=list)  # (["mlcl", "train"], "ARGS")
    replaces: list[tuple[str, str]] = field(default_factory=list)
    fixtures: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


def parse_page(path: Path, text: str | None = None) -> list[Block]:
    """The fenced blocks of a Markdown page (MyST directives such as ```{toctree} are not code)."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, info = match.group("fence"), match.group("info").strip()
        end = i + 1
        while end < len(lines) and not re.match(rf"^\s*{re.escape(fence[0])}{{{len(fence)},}}\s*$", lines[end]):
            end += 1
        if not info.startswith("{"):
            code = "\n".join(line[len(match.group("indent")) :] for line in lines[i + 1 : end]) + "\n"
            block = Block(path, i + 1, info.split()[0].lower() if info else "", code)
            block.comment = _comment_above(lines, i)
            _classify(block)
            blocks.append(block)
        i = end + 1
    return blocks


def _comment_above(lines: list[str], fence_index: int) -> str | None:
    """The ``<!-- test: ... -->`` comment that ends on the line right above the fence (blank lines allowed)."""
    j = fence_index - 1
    while j >= 0 and not lines[j].strip():
        j -= 1
    if j < 0 or not lines[j].rstrip().endswith("-->"):
        return None
    start = j
    while start >= 0 and "<!--" not in lines[start]:
        start -= 1
    match = _COMMENT.search("\n".join(lines[max(start, 0) : j + 1]))
    return match.group("body") if match else None


def _classify(block: Block) -> None:
    lang = block.lang
    if not lang:
        block.problems.append("a fence without a language: name it (python, bash, text, yaml, ...)")
        return
    if lang not in PYTHON | SHELL | DATA:
        block.problems.append(f"unknown block language {lang!r}: one of {sorted(PYTHON | SHELL | DATA)}")
        return
    if lang in DATA:
        if block.comment is not None:
            block.problems.append("a test comment above a data block: data blocks are not run")
        return
    if block.comment is None:
        if lang in SHELL:
            block.problems.append("a shell block without `<!-- test: run -->` or `<!-- test: skip REASON -->` above it")
            return
        block.action = "run"  # python blocks run unless a comment says otherwise
        return
    first, *rest = block.comment.strip().splitlines() or [""]
    head = first.strip()
    if head == "run":
        block.action = "run"
    elif head.startswith("skip"):
        block.action = "skip"
        block.reason = head[len("skip") :].strip()
        if not block.reason:
            block.problems.append("`test: skip` needs a reason (why the block cannot run in the tests)")
        if rest:
            block.problems.append("a skipped block takes no settings")
        return
    else:
        block.problems.append(f"the test comment must start with `run` or `skip REASON`, got {head!r}")
        return
    for setting in rest:
        key, _, value = setting.strip().partition(":")
        value = value.strip()
        if not key.strip():
            continue
        if key == "append":
            prefix, sep, args = value.partition(":")
            words = prefix.split()
            if not sep or len(words) < 2 or words[0] != "mlcl":
                block.problems.append(f"`append: mlcl COMMAND: ARGS` expected, got {value!r}")
            else:
                block.appends.append((words, args.strip()))
        elif key == "replace":
            old, sep, new = value.partition(" => ")
            if not sep or not old:
                block.problems.append(f"`replace: OLD => NEW` expected, got {value!r}")
            elif old.strip() not in block.code:
                block.problems.append(f"`replace`: {old.strip()!r} is not in the block")
            else:
                block.replaces.append((old.strip(), new.strip()))
        elif key == "fixture":
            if value not in FIXTURES:
                block.problems.append(f"unknown fixture {value!r}: one of {sorted(FIXTURES)}")
            block.fixtures.append(value)
        else:
            block.problems.append(f"unknown test setting {key!r} (append, replace, fixture)")


def _all_blocks() -> list[Block]:
    return [block for page in PAGES for block in parse_page(page)]


BLOCKS = _all_blocks()


# --- the rules, checked without running anything ---


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_block_says_whether_it_runs(page: Path) -> None:
    problems = [f"{b.where}: {p}" for b in parse_page(page) for p in b.problems]
    assert not problems, "\n".join(problems)


def test_the_rules_catch_unmarked_and_unexplained_blocks() -> None:
    page = REPO / "docs" / "example.md"
    text = "\n".join([
        "```bash", "mlcl train", "```",
        "<!-- test: skip -->", "```bash", "mlcl train", "```",
        "```", "a b", "```",
        "<!-- test: run", "replace: --nope => --yes", "-->", "```bash", "mlcl train", "```",
        "<!-- test: skip needs two GPUs -->", "", "```bash", "torchrun", "```",
        "```{toctree}", "quickstart", "```",
        "```python", "print(1)", "```",
    ])  # fmt: skip
    blocks = parse_page(page, text)
    assert [b.line for b in blocks] == [1, 5, 8, 14, 19, 25]
    assert "without `<!-- test: run -->`" in blocks[0].problems[0]
    assert "needs a reason" in blocks[1].problems[0]
    assert "without a language" in blocks[2].problems[0]
    assert "'--nope' is not in the block" in blocks[3].problems[0]
    assert (blocks[4].action, blocks[4].reason, blocks[4].problems) == ("skip", "needs two GPUs", [])
    assert (blocks[5].action, blocks[5].problems) == ("run", [])


def test_readme_is_short_and_runs_the_ci_test_command() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 120, "the README is the newcomer's first page: keep it under 120 lines"
    commands = [b.code.strip() for b in parse_page(REPO / "README.md") if b.lang in SHELL]
    assert "pip install -e . && mlcl train" in commands
    assert 'pip install -e ".[dev]" && pytest' in commands
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r'^pip install -e "\.\[dev\]"', ci, re.M), ".ci/run must install the README's way"
    assert re.search(r"^pytest\s*$", ci, re.M), ".ci/run must run the README's test command"


def test_cli_page_names_every_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mlcl", "--help"], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    commands = re.search(r"\{([a-z,-]+)\}", out)
    assert commands, out
    page = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    missing = [c for c in commands.group(1).split(",") if f"mlcl {c}" not in page]
    assert not missing, f"docs/cli.md does not show: {', '.join('mlcl ' + c for c in missing)}"


# --- running the blocks ---


def _runnable_pages() -> list[Path]:
    return [page for page in PAGES if any(b.action == "run" and not b.problems for b in parse_page(page))]


@pytest.mark.parametrize(
    "block",
    [b for b in BLOCKS if b.action == "skip" and not b.problems],
    ids=lambda b: b.where,
)
def test_block_not_run(block: Block) -> None:
    pytest.skip(f"{block.where} not run: {block.reason}")


@pytest.mark.slow
@pytest.mark.parametrize("page", _runnable_pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_page_runs(page: Path, tmp_path: Path) -> None:
    if not SHARED.is_dir():
        pytest.fail(f"shared folder not found at {SHARED} (set MLCL_SHARED_DIR)")
    work = tmp_path / "work"
    work.mkdir()
    (tmp_path / "shared").symlink_to(SHARED, target_is_directory=True)  # `../shared` from the working folder
    for name in ("benchmarks", "configs"):
        (work / name).symlink_to(REPO / name, target_is_directory=True)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("PYTHONPATH", None)
    env["MPLBACKEND"] = "Agg"
    made: set[str] = set()
    for block in parse_page(page):
        if block.action != "run":
            continue
        for name in block.fixtures:
            if name not in made:
                _FIXTURE_MAKERS[name](work, env)
                made.add(name)
        _run_block(block, work, env)


def _run_block(block: Block, work: Path, env: dict[str, str]) -> None:
    code = block.code
    for old, new in block.replaces:
        code = code.replace(old, new)
    if block.lang in PYTHON:
        script = work / f"block_{block.line}.py"
        script.write_text(code, encoding="utf-8")
        cmd = [sys.executable, str(script)]
    else:
        script = work / f"block_{block.line}.sh"
        script.write_text(_shell_prelude(block) + code, encoding="utf-8")
        cmd = ["bash", "-e", "-o", "pipefail", str(script)]
    try:
        proc = subprocess.run(
            cmd, cwd=work, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S, start_new_session=True
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{block.where}: the block ran over {BLOCK_TIMEOUT_S} s\n{exc.output}")
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr)[-4000:]
        pytest.fail(f"{block.where}: the {block.lang} block exited with status {proc.returncode}:\n{code}\n---\n{out}")


def _shell_prelude(block: Block) -> str:
    """A `mlcl` shell function that appends the block's small settings to the commands it names."""
    if not block.appends:
        return ""
    branches = []
    for words, args in block.appends:
        tests = " && ".join(f'[ "${{{i}}}" = {shlex.quote(w)} ]' for i, w in enumerate(words[1:], start=1))
        branches.append(
            f'  if {tests} && ! printf "%s\\n" "$@" | grep -qx -- --resume; then command mlcl "$@" {args}; return; fi'
        )
    return "mlcl() {\n" + "\n".join(branches) + '\n  command mlcl "$@"\n}\n'


# --- fixtures named by the pages' comments ---


def _photos(work: Path, env: dict[str, str]) -> None:
    """``photos/``: 60 MIML photos with a label CSV where about 30 % of the cells are empty (unknown), and
    ``photos/new/``: 12 other photos (``1001.jpg``...) with their full labels in ``photos/new/labels.csv``.
    The images are links to ../shared, not copies."""
    miml = SHARED / "data" / "miml"
    with open(miml / "labels.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, rows = rows[0], rows[1:]
    images, new = work / "photos" / "images", work / "photos" / "new"
    images.mkdir(parents=True)
    new.mkdir()
    train = [header]
    for i, row in enumerate(rows[:60]):
        (images / row[0]).symlink_to(miml / "images" / row[0])
        train.append([row[0]] + ["" if (7 * i + 3 * j) % 10 < 3 else v for j, v in enumerate(row[1:])])
    held = [header]
    for k, row in enumerate(rows[60:72]):
        name = f"{1001 + k}.jpg"
        (new / name).symlink_to(miml / "images" / row[0])
        held.append([name] + row[1:])
    for path, table in ((work / "photos" / "labels.csv", train), (new / "labels.csv", held)):
        with open(path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(table)


_FIXTURE_MAKERS = {"photos": _photos}
