"""Export a checkpoint (float or quantized.pth) to ONNX.

python tools/deploy/export_onnx.py --help    (the code: qdrop/cli/export_onnx.py)
"""

import sys

from qdrop.cli.export_onnx import cli

if __name__ == "__main__":
    sys.exit(cli())
