"""``python -m reftlab ...``: the same as the ``reftlab`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
