"""``python -m app.cli``: the same as the ``lethe`` console script."""

from app.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
