"""What reconstruction did: one record per unit, returned by `qdrop.ptq.reconstruct` for whoever reports it."""

from dataclasses import dataclass


@dataclass(frozen=True)
class UnitReconstruction:
    """What reconstruction did to one unit."""

    unit: str
    error_before: float  # output error with round-to-nearest weights and calibrated activation ranges
    error_after: float
    curve: tuple[tuple[int, float], ...] = ()  # (step, reconstruction loss) as sampled during reconstruction


@dataclass(frozen=True)
class ReconstructionRecord:
    """One call of `reconstruct`: every unit in forward order, and what happened to those reconstructed in it (a
    resumed run reconstructs only the units after its last saved one)."""

    units: tuple[str, ...] = ()
    reconstructed: tuple[UnitReconstruction, ...] = ()
