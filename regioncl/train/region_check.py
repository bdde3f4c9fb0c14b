"""A warning when RegionCL works against the instance objective.

On some data (small objects on an empty background, few images) the region task pulls the shared
encoder away from the instance task, and the encoder ends behind the base method's. A run can see
that in its own metrics, in either of two ways, each a climb of one loss term over the logged
windows after the early phase:

* the instance loss (``loss_ins``) climbs back toward chance while the base method's would stay
  level or fall: the region task is working against the instance task;
* the region loss (``loss_reg``) climbs back toward chance: the region task is not being learnt
  (its boxes hold too little of the objects to be told apart), and its gradient is noise for the
  encoder.

:class:`RegionWatch` watches both and, the first time either has risen well above its lowest since
the early phase, says so once, in the log and in ``metrics.jsonl`` (a record with
``"warning": "region_hurts"``).

Each rise is measured against its term's chance level (``log(K + 1)`` for the instance InfoNCE
over a queue of K keys, ``log(K + 2)`` for a region row's, which also has its partner; 0 for
SimSiam's negative cosine), so one threshold serves every method and both terms: ``rise`` is the
fraction of the way back from the lowest loss to chance. A base method's run is never watched.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

#: the ``warning`` value of the record a :class:`RegionWatch` writes
WARNING = "region_hurts"
#: runs shorter than this are not watched
MIN_STEPS = 100
#: what each watched term is called in the warning, and what its climb means
TERMS = {
    "loss_ins": ("instance loss", "its region task is working against the instance task"),
    "loss_reg": ("region loss", "its region task is not being learnt on these images and only adds noise"),
}


class RegionCheck:
    """Watches one loss term (``loss_ins`` or ``loss_reg``) over the logged windows of a RegionCL run.

    Args:
        method: the method's name, for the message (``regioncl_m``, ...).
        base: the base method's name (``mocov2``, ...), for the message.
        chance: the term's value for an encoder that has learnt nothing.
        start_step: windows ending before it are the early phase, never the reference.
        rise: warn when the loss has come back this fraction of the way from its lowest to
            ``chance`` ...
        patience: ... in this many consecutive windows ...
        span: ... the first of which ended at least this many steps before the last.
        term: the record's key for the loss watched.
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
        term: str = "loss_ins",
    ) -> None:
        self.method, self.base, self.chance, self.start_step = method, base, chance, start_step
        self.rise, self.patience, self.span, self.term = rise, patience, span, term
        self.best: tuple[int, float] | None = None  # (step, loss) of the lowest window so far
        self.above: list[int] = []  # the steps of the consecutive windows above the threshold
        self.warned = False

    def see(self, step: int, loss: float) -> str | None:
        """One window's loss (ending at ``step``); the warning, the first time it is due."""
        if self.warned or step < self.start_step or not math.isfinite(loss):
            return None
        if self.best is None or loss < self.best[1]:
            self.best, self.above = (step, loss), []
            return None
        best_step, best = self.best
        if loss - best <= self.rise * max(self.chance - best, 1e-6):
            self.above = []
            return None
        self.above.append(step)
        if len(self.above) < self.patience or step - self.above[0] < self.span:
            return None
        self.warned = True
        name, meaning = TERMS[self.term]
        return (
            f"{self.method}'s {name} has risen from {best:.3f} (step {best_step}) to {loss:.3f} "
            f"(step {step}), {(loss - best) / (self.chance - best):.0%} of the way back to chance "
            f"({self.chance:.3f}), since step {self.above[0]}: {meaning}, and on data like this "
            f"{self.base} alone may give the better encoder. Compare with --model.method {self.base} on the "
            f"same recipe; try --method.region_warmup true (the region loss's weight ramped up over the "
            f"warm-up), a longer warm-up (optim.warmup_epochs) or a smaller method.region_weight"
        )

    def replay(self, metrics: Path) -> str | None:
        """:meth:`RegionWatch.replay` with this check alone."""
        return RegionWatch([self]).replay(metrics)


class RegionWatch:
    """The checks of one run, one per term: the first warning any of them gives is the run's only one."""

    def __init__(self, checks: list[RegionCheck]) -> None:
        self.checks = checks

    @property
    def warned(self) -> bool:
        return any(c.warned for c in self.checks)

    def see(self, record: dict[str, Any]) -> str | None:
        """One logged window's record (its ``step`` and loss terms); the warning, the first time it is due."""
        if self.warned or "step" not in record:
            return None
        for check in self.checks:
            if check.term in record:
                message = check.see(int(record["step"]), float(record[check.term]))
                if message:
                    return message
        return None

    def replay(self, metrics: Path) -> str | None:
        """See again the records of ``metrics.jsonl`` (a resumed run): the warning, if they call for
        one that is not among them."""
        due, written = None, False
        if metrics.is_file():
            for line in metrics.read_text().splitlines():
                record: dict[str, Any] = json.loads(line) if line.strip() else {}
                written = written or record.get("warning") == WARNING
                due = self.see(record) or due
        if written:
            for check in self.checks:
                check.warned = True
        return None if written else due


def region_check(
    method: str, model: Any, rise: float | None, total_steps: int, warmup_steps: int
) -> RegionWatch | None:
    """The watch for a run of ``method``: None for a base method, when ``rise`` is None, or for a
    run shorter than :data:`MIN_STEPS`, too short for a trend. The early phase, whose falling loss
    is no reference, lasts half the warm-up or a fifth of the run, whichever is longer; a climb
    counts once it has lasted three records and a twentieth of the run."""
    from ..methods import BASE_OF

    if rise is None or total_steps < MIN_STEPS or method not in BASE_OF or getattr(model, "region", None) is None:
        return None
    chances = {"loss_ins": model.instance_chance(), "loss_reg": model.region_chance()}
    return RegionWatch(
        [
            RegionCheck(
                method,
                BASE_OF[method],
                chance,
                max(warmup_steps // 2, total_steps // 5),
                rise,
                patience=3,
                span=total_steps // 20,
                term=term,
            )
            for term, chance in chances.items()
        ]
    )
