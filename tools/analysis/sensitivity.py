"""Per-unit quantization sensitivity of a detector.

python tools/analysis/sensitivity.py --help    (the code: qdrop/cli/sensitivity.py)
"""

import sys

from qdrop.cli.sensitivity import cli

if __name__ == "__main__":
    sys.exit(cli())
