"""Evaluate an exported ONNX detector in ONNX Runtime.

python tools/deploy/test_onnx.py --help    (the code: qdrop/cli/test_onnx.py)
"""

import sys

from qdrop.cli.test_onnx import cli

if __name__ == "__main__":
    sys.exit(cli())
