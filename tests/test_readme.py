"""The README's quick start works when pasted: run it as a script and check what it prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_quick_start_runs_and_completes() -> None:
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None, "README has no python quick start"
    result = subprocess.run(
        [sys.executable, "-c", code.group(1)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "waiting"
    assert lines[1].startswith("completed ")
    assert "'approved': True" in lines[1]
    assert "'step_type': 'payments.charge'" in lines[2]
