"""Helpers shared by the wf_stack tests."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 with a listener on it for the duration of the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def open_tmp_dir() -> Iterator[Path]:
    """A temporary directory that the postgres user can reach (pytest's tmp_path is root-only).

    On tmpfs where there is one: initdb there takes half the time.
    """
    shm = Path("/dev/shm")
    path = Path(tempfile.mkdtemp(prefix="wf-stack-test-", dir=shm if shm.is_dir() else None))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
