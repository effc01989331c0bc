"""The ``wf`` command line (development tokens now; the client SDK and CLI grow here)."""

from wf_cli.main import app

__all__ = ["app"]
