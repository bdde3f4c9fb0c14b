"""A warning when RegionCL works against the instance objective.

On some data (small objects on an empty background, few images) the region task pulls the shared
encoder away from the instance task: RegionCL's instance loss climbs through the second half of
training while the base method's stays level or falls, and the encoder ends behind the base
method's. A run can see that in its own metrics: :class:`RegionCheck` watches the instance loss of
the logged windows and, once it has risen well above its lowest since the early phase, says so
once, in the log and in ``metrics.jsonl`` (a record with ``"warning": "region_hurts"``).

The rise is measured against the loss's chance level (``log(K + 1)`` for InfoNCE over a queue of
K keys, 0 for SimSiam's negative cosine), so one threshold serves every method: ``rise`` is the
fraction of the way back from the lowest loss to chance. A base method's run is never watched.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

#: the ``warning`` value of the record a :class:`RegionCheck` writes
WARNING = "region_hurts"
#: runs shorter than this are not watched
MIN_STEPS = 100


class RegionCheck:
    """Watches ``loss_ins`` over the logged windows of a RegionCL run.

    Args:
        method: the method's name, for the message (``regioncl_m``, ...).
        base: the base method's name (``mocov2``, ...), for the message.
        chance: the instance loss of an encoder that has learnt nothing.
        start_step: windows ending before it are the early phase, never the reference.
        rise: warn when the loss has come back this fraction of the way from its lowest to
            ``chance`` ...
        patience: ... in this many consecutive windows ...
        span: ... the first of which ended at least this many steps before the last.
    """

    def __init__(
        self,
        method: str,
        base: str,
        chance: float,
        start_step: int,
        rise: float = 0.15,
        patience: int = 3,
        span: int = 0,
    ) -> None:
        self.method, self.base, self.chance, self.start_step = method, base, chance, start_step
        self.rise, self.patience, self.span = rise, patience, span
        self.best: tuple[int, float] | None = None  # (step, loss) of the lowest window so far
        self.above: list[int] = []  # the steps of the consecutive windows above the threshold
        self.warned = False

    def see(self, step: int, loss_ins: float) -> str | None:
        """One window's instance loss (ending at ``step``); the warning, the first time it is due."""
        if self.warned or step < self.start_step or not math.isfinite(loss_ins):
            return None
        if self.best is None or loss_ins < self.best[1]:
            self.best, self.above = (step, loss_ins), []
            return None
        best_step, best = self.best
        if loss_ins - best <= self.rise * max(self.chance - best, 1e-6):
            self.above = []
            return None
        self.above.append(step)
        if len(self.above) < self.patience or step - self.above[0] < self.span:
            return None
        self.warned = True
        return (
            f"{self.method}'s instance loss has risen from {best:.3f} (step {best_step}) to {loss_ins:.3f} "
            f"(step {step}), {(loss_ins - best) / (self.chance - best):.0%} of the way back to chance "
            f"({self.chance:.3f}), since step {self.above[0]}: its region task is working against the instance "
            f"task, and on data like this {self.base} alone may give the better encoder. Compare with "
            f"--model.method {self.base} on the same recipe; try a longer warm-up (optim.warmup_epochs) "
            f"or a smaller method.region_weight"
        )

    def replay(self, metrics: Path) -> str | None:
        """See again the records of ``metrics.jsonl`` (a resumed run): the warning, if they call for
        one that is not among them."""
        due, written = None, False
        if metrics.is_file():
            for line in metrics.read_text().splitlines():
                record: dict[str, Any] = json.loads(line) if line.strip() else {}
                written = written or record.get("warning") == WARNING
                if "loss_ins" in record and "step" in record:
                    due = self.see(int(record["step"]), float(record["loss_ins"])) or due
        self.warned = self.warned or written
        return None if written else due


def region_check(
    method: str, model: Any, rise: float | None, total_steps: int, warmup_steps: int
) -> RegionCheck | None:
    """The check for a run of ``method``: None for a base method, when ``rise`` is None, or for a
    run shorter than :data:`MIN_STEPS`, too short for a trend. The early phase, whose falling loss
    is no reference, lasts half the warm-up or a fifth of the run, whichever is longer; a climb
    counts once it has lasted three records and a twentieth of the run."""
    from ..methods import BASE_OF

    if rise is None or total_steps < MIN_STEPS or method not in BASE_OF or getattr(model, "region", None) is None:
        return None
    return RegionCheck(
        method,
        BASE_OF[method],
        model.instance_chance(),
        max(warmup_steps // 2, total_steps // 5),
        rise,
        patience=3,
        span=total_steps // 20,
    )
