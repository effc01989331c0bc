"""``python -m wf_stack``: see `wf_stack.cli`."""

from wf_stack.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
