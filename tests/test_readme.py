"""Every curl command in the README and in docs/ runs against the three services, and prints what the page shows;
every relative link in those pages leads somewhere; the README stays a front page.

A command is a ```sh block that talks to localhost:8000; the untagged block right after it is its
output. Output lines are matched in order (lines of the real output may come between, such as the
headers a page leaves out). In a page's output, IDs (16 or 32 hex digits) and timestamps stand for any
value of their shape, and "…" for anything. The same ID in two places of one page must be the same value
in the real output, and two different IDs different values; an order ID printed by one command replaces
the page's in the commands after it (reading an order back). Each page is a walk of its own: IDs are
not shared between pages, but the services (and so the stored orders and idempotency keys) are.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness import ROOT
from harness.processes import running_shop
from tools import require

pytestmark = pytest.mark.processes

README = ROOT / "README.md"
README_MAX_LINES = 200  # a front page; the details live in docs/
FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```\n", re.M | re.S)
ID = re.compile(r"\b[0-9a-f]{32}\b")
SHAPES = [
    (ID, r"([0-9a-f]{32})"),  # captured: see the module docstring
    (re.compile(r"\b[0-9a-f]{16}\b"), r"[0-9a-f]{16}"),
    (re.compile(r"\brv:[0-9a-f]{14}\b"), r"rv:[0-9a-f]{14}"),  # a trace's randomness (tracestate)
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?\+00:00"), r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00"),
]
INLINE_CODE = re.compile(r"`+[^`\n]*`+")
COMMENT = re.compile(r"<!--.*?-->", re.S)
LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(?P<text>.+?)\s*#*\s*$", re.M)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # http:, https:, mailto:


def pages() -> list[Path]:
    """The README and every Markdown page under docs/, so that a new page is covered without listing it."""
    return [README, *sorted((ROOT / "docs").rglob("*.md"))]


def page_name(page: Path) -> str:
    return str(page.relative_to(ROOT) if page.is_relative_to(ROOT) else page)


@dataclass
class Example:
    where: str
    command: str
    output: str


def curl_examples(page: Path) -> list[Example]:
    text = page.read_text()
    blocks = list(FENCE.finditer(text))
    examples = []
    for index, block in enumerate(blocks):
        following = blocks[index + 1] if index + 1 < len(blocks) else None
        if block["lang"] != "sh" or "curl " not in block["body"] or "localhost:8000" not in block["body"]:
            continue
        where = f"{page_name(page)} line {text.count(chr(10), 0, block.start()) + 1}"
        assert following is not None, f"{where}: a curl command without its output"
        assert following.start() == block.end(), f"{where}: its output must follow at once"
        assert following["lang"] == "", f"{where}: its output goes in an untagged block"
        examples.append(Example(where, block["body"], following["body"]))
    return examples


def prose(text: str) -> str:
    """The text with code blocks, inline code and comments blanked (line numbers kept): links live outside them."""

    def blank(match: re.Match[str]) -> str:
        return re.sub(r"[^\n]", " ", match.group())

    text = FENCE.sub(blank, text)
    text = COMMENT.sub(blank, text)
    return INLINE_CODE.sub(lambda match: "x" * len(match.group()), text)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: link markup and punctuation dropped, lowercase, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for match in HEADING.finditer(FENCE.sub("", page.read_text())):
        base = anchor(match["text"])
        name, count = base, 0
        while name in found:  # GitHub numbers repeated headings: name, name-1, name-2...
            count += 1
            name = f"{base}-{count}"
        found.add(name)
    return found


def broken_links(page: Path) -> list[str]:
    """Every relative link of the page whose file, or heading, does not exist."""
    text = prose(page.read_text())
    broken = []
    for match in LINK.finditer(text):
        target = match["target"]
        if EXTERNAL.match(target):
            continue
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        where = f"{page_name(page)} line {text.count(chr(10), 0, match.start()) + 1}: {target}"
        if not file.exists():
            broken.append(f"{where}: no such file")
        elif fragment and (file.suffix != ".md" or fragment not in anchors(file)):
            broken.append(f"{where}: no such heading")
    return broken


def line_pattern(documented: str) -> re.Pattern[str]:
    """A documented output line as a regular expression: shapes for IDs and times, '…' for anything."""
    pieces = re.split(f"({'|'.join(shape.pattern for shape, _ in SHAPES)}|…)", documented)
    regex = ""
    for piece in filter(None, pieces):
        if piece == "…":
            regex += ".*"
            continue
        for shape, replacement in SHAPES:
            if shape.fullmatch(piece):
                regex += replacement
                break
        else:
            regex += re.escape(piece)
    return re.compile(regex)


class IdMap:
    """A page's IDs to the real ones: one-to-one, or the page's claims about sameness are wrong."""

    def __init__(self) -> None:
        self.real: dict[str, str] = {}

    def bind(self, documented: str, real: str, where: str) -> None:
        if documented in self.real:
            assert self.real[documented] == real, f"{where}: {documented} stands for two different IDs"
        else:
            assert real not in self.real.values(), f"{where}: {real} stands in for two IDs of the page"
            self.real[documented] = real

    def apply(self, command: str) -> str:
        return ID.sub(lambda match: self.real.get(match.group(), match.group()), command)


def check_output(example: Example, actual: str, ids: IdMap) -> None:
    actual_lines = [line.rstrip("\r") for line in actual.splitlines()]
    position = 0
    for documented in filter(None, example.output.splitlines()):
        pattern = line_pattern(documented)
        for index in range(position, len(actual_lines)):
            match = pattern.fullmatch(actual_lines[index])
            if match:
                for page_id, real_id in zip(ID.findall(documented), match.groups(), strict=True):
                    ids.bind(page_id, real_id, example.where)
                position = index + 1
                break
        else:
            raise AssertionError(
                f"{example.where}: no line of the output matches {documented!r}\n"
                f"command:\n{example.command}\noutput:\n{actual}"
            )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # Fault headers on, as compose's .env and make run set them.
    with running_shop(tmp_path_factory.mktemp("readme"), GATEWAY_ALLOW_FAULT_HEADERS="true") as shop:
        yield shop.gateway.removeprefix("http://")


def test_the_pages_have_curl_examples_with_outputs() -> None:
    examples = {page: curl_examples(page) for page in pages()}
    assert examples[README], "the README's quick start places an order with curl"
    assert sum(map(len, examples.values())) >= 9
    assert any("Idempotency-Key" in example.command for found in examples.values() for example in found)


@pytest.mark.parametrize("page", [page_name(page) for page in pages()])
def test_every_curl_command_prints_what_its_page_shows(page: str, gateway: str, tmp_path: Path) -> None:
    bash = require(shutil.which("bash"), "bash is missing")
    require(shutil.which("curl"), "curl is missing (apt-get install curl)")
    ids = IdMap()
    for example in curl_examples(ROOT / page):
        command = ids.apply(example.command).replace("localhost:8000", gateway)
        run = subprocess.run(
            [bash, "-eo", "pipefail", "-c", command],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
            check=False,
        )
        assert run.returncode == 0, f"{example.where}: exit {run.returncode}\n{run.stderr[-2000:]}"
        check_output(example, run.stdout, ids)


@pytest.mark.parametrize("page", [page_name(page) for page in pages()])
def test_every_relative_link_leads_to_a_file_and_heading(page: str) -> None:
    assert broken_links(ROOT / page) == []


def test_the_readme_is_a_front_page() -> None:
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move details to docs/"


def test_the_link_checker_can_fail(tmp_path: Path) -> None:
    """Anchors follow GitHub's rules, and a missing file or heading is reported."""
    assert anchor("Traffic: `make demo` and `make load`") == "traffic-make-demo-and-make-load"
    assert anchor("Compose (`.env`)") == "compose-env"
    (tmp_path / "other.md").write_text("# Fault headers and edge trust\n\n## Notes\n\n## Notes\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#fault-headers-and-edge-trust) [ok](other.md#notes-1) [ok](#top) [ok](https://x.org/#y)\n"
        "# Top\n"
        "`[code](missing.md)` and\n```\n[block](missing.md)\n```\n"
        "[file](missing.md) [heading](other.md#notes-2) [self](#nowhere)\n"
    )
    assert broken_links(page) == [
        f"{page} line 7: missing.md: no such file",
        f"{page} line 7: other.md#notes-2: no such heading",
        f"{page} line 7: #nowhere: no such heading",
    ]


def test_the_output_matcher_can_fail() -> None:
    """The matcher above is the whole test: it must refuse a wrong status, field or ID reuse."""
    example = Example("line 1", "", 'HTTP/1.1 201 Created\n\n{"order_id": "' + "a" * 32 + '", "status": "paid"}\n')
    good = 'HTTP/1.1 201 Created\r\nDate: x\r\n\r\n{"order_id": "' + "1" * 32 + '", "status": "paid"}'
    check_output(example, good, IdMap())
    with pytest.raises(AssertionError, match="no line of the output matches"):
        check_output(example, good.replace("201 Created", "202 Accepted"), IdMap())
    with pytest.raises(AssertionError, match="no line of the output matches"):
        check_output(example, good.replace('"paid"', '"pending"'), IdMap())
    ids = IdMap()
    ids.bind("a" * 32, "2" * 32, "earlier")
    with pytest.raises(AssertionError, match="stands for two different IDs"):
        check_output(example, good, ids)
