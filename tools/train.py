"""Train a detector: `python tools/train.py CONFIG [--work-dir DIR] ...`, the same as `qdrop-train` (see --help)."""

from mmdet.apis.cli_train import main

if __name__ == "__main__":
    main()
