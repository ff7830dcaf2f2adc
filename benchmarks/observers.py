"""MSE observer speed: our searches against a plain loop over the same candidates, with the error each one picks.

Run from the repository root:  .venv/bin/python benchmarks/observers.py [--threads 1] [--max-plain-seconds 120]

The plain loop evaluates every candidate (grid) or every probe (golden-section search) on all values. A plain loop
that would run longer than --max-plain-seconds is timed on a fixed subset of its candidates and extrapolated
(marked "extrap."); its error is then not known ("-"). Our searches: the median of 3 runs of fresh observers after
one warm-up run.
"""

import argparse
import functools
import statistics
import time
from typing import Callable, Optional

import torch

from plain_search import plain_grid_search  # the plain loop, shared with the tests
from qdrop.quantization import AvgMSEFastObserver, MSEObserver
from qdrop.quantization.observers.grid_search import grid_candidates
from qdrop.quantization.observers.mse_objective import lp_error
from qdrop.quantization.observers.scalar_search import ExactObjective, golden_search


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def _error(observer, rows: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> float:
    scale, zero_point = observer.calculate_qparams(lo.reshape(-1), hi.reshape(-1))
    return float(
        lp_error(
            rows, scale.expand(rows.shape[0]), zero_point.expand(rows.shape[0]), observer.quant_min, observer.quant_max
        ).mean()
    )


def _timed_observer(make: Callable[[], torch.nn.Module], x: torch.Tensor, repeats: int = 3):
    """Median seconds of ``repeats`` runs of fresh observers on ``x``, after one warm-up run; the last observer."""
    make()(x)
    times = []
    for _ in range(repeats):
        observer = make()
        times.append(_timed(functools.partial(observer, x))[0])
    return statistics.median(times), observer


def grid_case(x: torch.Tensor, bit: int, ch_axis: int, max_plain: float):
    ours_s, observer = _timed_observer(lambda: MSEObserver(bit=bit, ch_axis=ch_axis), x)
    rows = observer._rows(x)
    two_sided = observer.one_side_dist == "no"
    cand_min, cand_max = grid_candidates(
        rows, observer.quant_min, observer.quant_max, two_sided, observer.one_side_dist
    )
    total = cand_min.shape[1]
    probe_s, _ = _timed(
        lambda: plain_grid_search(
            rows,
            cand_min,
            cand_max,
            observer.calculate_qparams,
            observer.quant_min,
            observer.quant_max,
            columns=range(0, total, 80),
        )
    )
    estimate = probe_s / len(range(0, total, 80)) * total
    plain_err: Optional[float] = None
    if estimate <= max_plain:
        plain_s, (lo, hi) = _timed(
            lambda: plain_grid_search(
                rows, cand_min, cand_max, observer.calculate_qparams, observer.quant_min, observer.quant_max
            )
        )
        plain_err, note = _error(observer, rows, lo, hi), ""
    else:
        plain_s, note = estimate, "extrap."
    ours_err = _error(observer, rows, observer.min_val, observer.max_val)
    return "MSEObserver", ours_s, plain_s, note, ours_err, plain_err


def golden_case(x: torch.Tensor, bit: int, max_plain: float):
    ours_s, observer = _timed_observer(lambda: AvgMSEFastObserver(bit=bit), x)
    rows = observer._rows(x)
    two_sided = observer.one_side_dist == "no"
    lo, hi = float(rows.min()), float(rows.max())

    def plain(objective):
        return golden_search(
            objective, 0, lo, hi, two_sided, observer.one_side_dist, observer.quant_min, observer.quant_max
        )

    # The number of probes does not depend on the data; count them on a small sample.
    counter = ExactObjective(
        rows[:, ::997].contiguous(), observer.calculate_qparams, observer.quant_min, observer.quant_max
    )
    plain(counter)
    full = ExactObjective(rows, observer.calculate_qparams, observer.quant_min, observer.quant_max)
    one_s, _ = _timed(lambda: [full.probe(0, -0.1 * k, 1.0 + 0.1 * k) for k in range(3)])
    estimate = one_s / 3 * counter.evaluations
    plain_err: Optional[float] = None
    if estimate <= max_plain:
        plain_s, (p_lo, p_hi) = _timed(lambda: plain(full))
        plain_err, note = _error(observer, rows, rows.new_tensor(p_lo), rows.new_tensor(p_hi)), ""
    else:
        plain_s, note = estimate, "extrap."
    ours_err = _error(observer, rows, observer.min_val, observer.max_val)
    return "AvgMSEFastObserver", ours_s, plain_s, note, ours_err, plain_err


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads for both searches")
    parser.add_argument("--max-plain-seconds", type=float, default=120.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(256, 256, 3, 3, generator=generator) * torch.rand(256, 1, 1, 1, generator=generator) * 0.05
    small = torch.randn(64, 128, 3, 3, generator=generator) * torch.rand(64, 1, 1, 1, generator=generator) * 0.05
    activation = torch.randn(2, 256, 100, 168, generator=generator)
    activation = torch.where(activation > 0, activation * 1.5, activation * 0.4)  # signed, skewed
    cases = [
        (small, 4, "per channel (0)", lambda: grid_case(small, 4, 0, args.max_plain_seconds)),
        (small, 2, "per channel (0)", lambda: grid_case(small, 2, 0, args.max_plain_seconds)),
        (weight, 4, "per channel (0)", lambda: grid_case(weight, 4, 0, args.max_plain_seconds)),
        (weight, 2, "per channel (0)", lambda: grid_case(weight, 2, 0, args.max_plain_seconds)),  # exp/config.yaml's W2
        (activation, 4, "per tensor", lambda: golden_case(activation, 4, args.max_plain_seconds)),
        (activation, 4, "per tensor", lambda: grid_case(activation, 4, -1, args.max_plain_seconds)),
    ]
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    header = (
        f"{'observer':<20} {'shape':<18} {'bits':>4} {'granularity':<16} {'plain s':>10} {'ours s':>8} "
        f"{'speed-up':>9} {'plain error':>12} {'ours error':>12}"
    )
    print(header)
    print("-" * len(header))
    for tensor, bit, granularity, run in cases:
        name, ours_s, plain_s, note, ours_err, plain_err = run()
        plain_text = f"{plain_s:.1f}" + (f" {note}" if note else "")
        plain_err_text = "-" if plain_err is None else f"{plain_err:.6g}"
        print(
            f"{name:<20} {'x'.join(map(str, tensor.shape)):<18} {bit:>4} {granularity:<16} {plain_text:>10} "
            f"{ours_s:>8.2f} {plain_s / ours_s:>8.1f}x {plain_err_text:>12} {ours_err:>12.6g}",
            flush=True,
        )


if __name__ == "__main__":
    main()
