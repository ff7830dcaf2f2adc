"""Demo: the tiny synthetic-data detectors in float, W4A4 and W2A4 (qdrop/solver/demo.py; `make demo` runs it).

python exp/demo.py --work-dir work_dirs/demo
"""

import sys

from qdrop.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
