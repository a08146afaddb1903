"""Born-again networks (Furlanello et al. 2018, "Born Again Neural Networks", ICML).

Generation 0 is the teacher. Generation k+1 is a fresh student distilled from
generation k; the paper uses the teacher's own architecture for every
generation (set ``student: {model: <teacher's model>}``) and finds later
generations can beat their teachers. Outputs: ``OUT/gen-1``, ``OUT/gen-2``, ...
and ``OUT/scheme.json`` with every generation's test metrics.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

from pydantic import Field

from kdistill.config import ExperimentConfig
from kdistill.data import DataSplits
from kdistill.errors import ConfigError
from kdistill.experiment import RunResult, get_teacher, run_distill
from kdistill.schemes._common import prepare, write_summary
from kdistill.schemes.registry import register_scheme

log = logging.getLogger("kdistill")

# each generation is a full training run; the paper stops after a handful
MAX_GENERATIONS = 100


@register_scheme("born-again")
def run_born_again(cfg: ExperimentConfig, *, data: DataSplits | None = None, out_dir: str | Path | None = None,
                   generations: Annotated[int, Field(ge=1, le=MAX_GENERATIONS)] = 3) -> RunResult:
    """Distil ``generations`` students in a chain; return the last generation."""
    if generations < 1:
        raise ConfigError(f"born-again: generations must be at least 1, got {generations}.")
    data, out = prepare(cfg, data, out_dir)
    teacher = get_teacher(cfg, data, out)
    results = []
    for gen in range(1, generations + 1):
        log.info("born-again generation %d of %d", gen, generations)
        result = run_distill(cfg, data=data, teacher=teacher, out_dir=out / f"gen-{gen}")
        results.append(result)
        teacher = result.model
    write_summary(out, {"scheme": "born-again", "generations": [r.metrics for r in results]})
    last = results[-1]
    last.metrics = dict(last.metrics, generations=[r.metrics.get("accuracy") for r in results])
    return last
