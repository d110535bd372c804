"""The documentation's code runs as written.

Every fenced block whose info string is `bash` or `python` in README.md, CONTRIBUTING.md and
docs/*.md runs here: the blocks of one document in order, in one fresh working directory,
so a later block can read what an earlier one built. Bash blocks run under
`bash -euo pipefail`, Python blocks with this interpreter. The source roots the docs name
($IMAGENET_ROOT, ...) are small fixture trees made from the embedded sample.

A block preceded by `<!-- docs-test: skip (REASON) -->` is not run. A reason is required, and
at most MAX_SKIPPED blocks may be skipped in all the docs: skip only what cannot run offline.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from .fixtures import (
    make_audio_folder,
    make_cityscapes,
    make_image_folder,
    make_imagenet,
    make_librispeech,
    make_musdb_hq,
)

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
MAX_SKIPPED = 5
BLOCK_TIMEOUT_S = 300

FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")
SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\s*(?:\((?P<reason>[^)]*)\))?\s*-->\s*$")


@dataclass
class Block:
    document: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    skip_reason: str | None  # None: runs; "": skip marker without a reason

    @property
    def where(self) -> str:
        first = next((line for line in self.code.splitlines() if line.strip()), "")
        return f"{self.document.relative_to(REPO)}:{self.line} ({self.language}): {first.strip()}"


def extract_blocks(document: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the skip marker just above each, if any."""
    lines = document.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        fence, info = opening["fence"], opening["info"].strip()
        body: list[str] = []
        end = index + 1
        while end < len(lines):
            closing = FENCE.match(lines[end])
            if (
                closing
                and closing["fence"][0] == fence[0]
                and len(closing["fence"]) >= len(fence)
                and not closing["info"].strip()
            ):
                break
            body.append(lines[end])
            end += 1
        previous = index - 1
        while previous >= 0 and not lines[previous].strip():
            previous -= 1
        marker = SKIP.match(lines[previous]) if previous >= 0 else None
        skip_reason = (marker["reason"] or "").strip() if marker else None
        language = info.split()[0].lower() if info else ""
        blocks.append(Block(document, index + 1, language, "\n".join(body) + "\n", skip_reason))
        index = end + 1
    return blocks


def runnable(document: Path) -> list[Block]:
    return [block for block in extract_blocks(document) if block.language in ("bash", "python")]


@pytest.fixture(scope="module")
def source_roots(tmp_path_factory) -> dict[str, str]:
    """The fixture trees behind the environment variables the docs use."""
    base = tmp_path_factory.mktemp("doc-sources")
    make_imagenet(base / "imagenet")
    make_cityscapes(base / "cityscapes", split="val")
    make_librispeech(base / "librispeech", subset="dev-clean")
    make_musdb_hq(base / "musdb", split="test")
    make_image_folder(base / "images", copies=2, split="train")
    make_audio_folder(base / "audio", split="train")
    return {
        "IMAGENET_ROOT": str(base / "imagenet"),
        "CITYSCAPES_ROOT": str(base / "cityscapes"),
        "LIBRISPEECH_ROOT": str(base / "librispeech"),
        "MUSDB_ROOT": str(base / "musdb"),
        "IMAGES_ROOT": str(base / "images"),
        "AUDIO_ROOT": str(base / "audio"),
    }


def test_documents_exist():
    for document in DOCUMENTS:
        assert document.is_file(), f"{document.relative_to(REPO)} is missing"
    for name in ("format", "loading", "codecs", "evaluation", "reliability", "scaling"):
        assert (REPO / "docs" / f"{name}.md").is_file(), f"docs/{name}.md is missing"


def test_skips_are_few_and_explained():
    skipped = [block for document in DOCUMENTS for block in runnable(document) if block.skip_reason is not None]
    unexplained = [block.where for block in skipped if not block.skip_reason]
    assert not unexplained, "docs-test: skip needs a reason in parentheses: " + "; ".join(unexplained)
    assert len(skipped) <= MAX_SKIPPED, f"{len(skipped)} blocks skipped (at most {MAX_SKIPPED}): " + "; ".join(
        b.where for b in skipped
    )


def test_extract_blocks(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n<!-- docs-test: skip (needs the network) -->\n```bash\ncurl x\n```\n\n"
        "```python\nprint(1)\n```\n\n````text\n```bash\nnot a block\n```\n````\n"
    )
    blocks = extract_blocks(page)
    assert [(b.language, b.skip_reason, b.code) for b in blocks] == [
        ("bash", "needs the network", "curl x\n"),
        ("python", None, "print(1)\n"),
        ("text", None, "```bash\nnot a block\n```\n"),
    ]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(REPO)))
def test_document_code_runs(document: Path, source_roots: dict[str, str], tmp_path: Path):
    blocks = [block for block in runnable(document) if block.skip_reason is None]
    if not blocks:
        pytest.skip(f"{document.name} has no runnable blocks")
    lossyds = shutil.which("lossyds", path=str(Path(sys.executable).parent)) or shutil.which("lossyds")
    assert lossyds, "the lossyds console script is not installed (pip install -e .)"
    env = dict(os.environ, **source_roots)
    env["PATH"] = os.pathsep.join([str(Path(lossyds).parent), str(Path(sys.executable).parent), env.get("PATH", "")])
    env.pop("HF_TOKEN", None)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    for number, block in enumerate(blocks, 1):
        script = tmp_path / f".docs-block-{number:02d}.{'sh' if block.language == 'bash' else 'py'}"
        script.write_text(block.code)
        command = (
            ["bash", "-euo", "pipefail", str(script)] if block.language == "bash" else [sys.executable, str(script)]
        )
        try:
            result = subprocess.run(
                command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"block {number} of {len(blocks)} timed out after {BLOCK_TIMEOUT_S} s: {block.where}")
        if result.returncode != 0:
            pytest.fail(
                f"block {number} of {len(blocks)} failed (exit {result.returncode}): {block.where}\n"
                f"--- stderr (tail)\n{result.stderr[-4000:]}\n--- stdout (tail)\n{result.stdout[-2000:]}",
                pytrace=False,
            )
