"""Entry point: python3 -m tools.export.svd --help (docs/models.md)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main("svd"))
