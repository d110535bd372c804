"""The README's set-up commands on a machine where the user is not root."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SYSTEM_PACKAGES = Path(__file__).parents[2] / ".ci" / "system-packages"


def as_unprivileged_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: cannot drop to an unprivileged user")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--reset-env"]


def test_system_packages_step_passes_without_root():
    """.ci/run (the README's test command) installs FFmpeg where it can; without root it
    must go on (the tests needing FFmpeg skip), not stop the command."""
    script = SYSTEM_PACKAGES.read_text()
    result = subprocess.run(
        [*as_unprivileged_user(), "bash", "-s"],
        input=script,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/tmp"},
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "E: " not in result.stderr, result.stderr
