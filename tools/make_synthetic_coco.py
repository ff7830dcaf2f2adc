"""Write the synthetic COCO-format shapes data set (see mmdet/datasets/synthetic.py).

python tools/make_synthetic_coco.py data/synthetic_coco [--num-train 1200] [--num-val 200] [--seed 0]
"""

import argparse
import time

from mmdet.datasets.synthetic import DEFAULT_NUM_TRAIN, DEFAULT_NUM_VAL, make_synthetic_coco


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", help="output folder; gets train2017/, val2017/ and annotations/")
    parser.add_argument("--num-train", type=int, default=DEFAULT_NUM_TRAIN, help="training images")
    parser.add_argument("--num-val", type=int, default=DEFAULT_NUM_VAL, help="validation images")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same bytes")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    splits = make_synthetic_coco(args.out_dir, num_train=args.num_train, num_val=args.num_val, seed=args.seed)
    for split, coco in splits.items():
        print(f"{split}: {len(coco['images'])} images, {len(coco['annotations'])} boxes")
    print(f"written to {args.out_dir} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
