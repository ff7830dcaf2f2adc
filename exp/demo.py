"""Demo: the tiny synthetic-data detectors in float, W4A4 and W2A4 (qdrop/cli/demo.py; `make demo` runs it).

python exp/demo.py --work-dir work_dirs/demo [--models retinanet faster_rcnn fcos]
"""

import sys

from qdrop.cli.demo import cli

if __name__ == "__main__":
    sys.exit(cli())
