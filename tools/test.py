"""Evaluate a checkpoint: `python tools/test.py CONFIG CHECKPOINT --eval bbox ...`, the same as `qdrop-test`."""

import sys

from qdrop.cli.test import cli

if __name__ == "__main__":
    sys.exit(cli())
