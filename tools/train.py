"""Train a detector: `python tools/train.py CONFIG [--work-dir DIR] ...`, the same as `qdrop-train` (see --help)."""

import sys

from qdrop.cli.train import cli

if __name__ == "__main__":
    sys.exit(cli())
