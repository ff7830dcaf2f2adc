"""Compare an exported ONNX detector's raw outputs with its checkpoint.

python tools/deploy/compare_onnx.py --help    (the code: qdrop/cli/compare_onnx.py)
"""

import sys

from qdrop.cli.compare_onnx import cli

if __name__ == "__main__":
    sys.exit(cli())
