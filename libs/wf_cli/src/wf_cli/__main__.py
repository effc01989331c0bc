"""``python -m wf_cli`` is ``wf``."""

from wf_cli.main import app

app()
