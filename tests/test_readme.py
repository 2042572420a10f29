"""Every curl command in the README runs against the three services, and prints what the README shows.

A command is a ```sh block that talks to localhost:8000; the untagged block right after it is its
output. Output lines are matched in order (lines of the real output may come between, such as the
headers the README leaves out). In the README's output, IDs (16 or 32 hex digits) and timestamps stand
for any value of their shape, and "…" for anything. The same ID in two places must be the same value in
the real output, and two different IDs different values; an order ID printed by one command replaces
the README's in the commands after it (reading an order back).
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
FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```\n", re.M | re.S)
ID = re.compile(r"\b[0-9a-f]{32}\b")
SHAPES = [
    (ID, r"([0-9a-f]{32})"),  # captured: see the module docstring
    (re.compile(r"\b[0-9a-f]{16}\b"), r"[0-9a-f]{16}"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?\+00:00"), r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00"),
]


@dataclass
class Example:
    line: int
    command: str
    output: str


def readme_examples() -> list[Example]:
    text = README.read_text()
    blocks = list(FENCE.finditer(text))
    examples = []
    for block, following in zip(blocks, [*blocks[1:], None], strict=True):
        if block["lang"] != "sh" or "curl " not in block["body"] or "localhost:8000" not in block["body"]:
            continue
        line = text.count("\n", 0, block.start()) + 1
        assert following is not None, f"README line {line}: a curl command without its output"
        assert following.start() == block.end(), f"README line {line}: its output must follow at once"
        assert following["lang"] == "", f"README line {line}: its output goes in an untagged block"
        examples.append(Example(line, block["body"], following["body"]))
    return examples


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
    """README IDs to the real ones: one-to-one, or the README's claims about sameness are wrong."""

    def __init__(self) -> None:
        self.real: dict[str, str] = {}

    def bind(self, documented: str, real: str, where: str) -> None:
        if documented in self.real:
            assert self.real[documented] == real, f"{where}: {documented} stands for two different IDs"
        else:
            assert real not in self.real.values(), f"{where}: {real} stands in for two README IDs"
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
                for readme_id, real_id in zip(ID.findall(documented), match.groups(), strict=True):
                    ids.bind(readme_id, real_id, f"README line {example.line}")
                position = index + 1
                break
        else:
            raise AssertionError(
                f"README line {example.line}: no line of the output matches {documented!r}\n"
                f"command:\n{example.command}\noutput:\n{actual}"
            )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # Fault headers on, as compose's .env and make run set them.
    with running_shop(tmp_path_factory.mktemp("readme"), GATEWAY_ALLOW_FAULT_HEADERS="true") as shop:
        yield shop.gateway.removeprefix("http://")


def test_the_readme_has_curl_examples_with_outputs() -> None:
    examples = readme_examples()
    assert len(examples) >= 9
    assert any("Idempotency-Key" in example.command for example in examples)


def test_every_curl_command_in_the_readme_prints_what_the_readme_shows(gateway: str, tmp_path: Path) -> None:
    bash = require(shutil.which("bash"), "bash is missing")
    require(shutil.which("curl"), "curl is missing (apt-get install curl)")
    ids = IdMap()
    for example in readme_examples():
        command = ids.apply(example.command).replace("localhost:8000", gateway)
        run = subprocess.run(
            [bash, "-eo", "pipefail", "-c", command],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
            check=False,
        )
        assert run.returncode == 0, f"README line {example.line}: exit {run.returncode}\n{run.stderr[-2000:]}"
        check_output(example, run.stdout, ids)


def test_the_output_matcher_can_fail() -> None:
    """The matcher above is the whole test: it must refuse a wrong status, field or ID reuse."""
    example = Example(1, "", 'HTTP/1.1 201 Created\n\n{"order_id": "' + "a" * 32 + '", "status": "paid"}\n')
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
