"""Float and quantized detections side by side.

python tools/analysis/show_detections.py --help    (the code: qdrop/cli/show_detections.py)
"""

import sys

from qdrop.cli.show_detections import cli

if __name__ == "__main__":
    sys.exit(cli())
