"""Weights & Biases tracking of a training run (the optional `tracking` extra).

The only module that imports wandb (an import-linter contract in pyproject.toml), and only when the recipe
turns it on, so training without the extra is unchanged. `require_wandb` runs first thing in `train`, on every
rank, so a recipe that asks for W&B on a machine without it fails before any model is loaded. Rank 0 alone
starts the run; `train` ends it, FAILED (exit code 1) when training raised.
"""

from __future__ import annotations

import importlib
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from videoqa.training.config import TrainConfig, WandbSettings

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

RUN_ID_FILE = "wandb_run_id"  # in OUTPUT_DIR: a resumed launch continues the same W&B run


def require_wandb(cfg: TrainConfig) -> None:
    """Import wandb when the recipe asks for it; a clear error naming the setting and the extra when missing."""
    if cfg.wandb is None:
        return
    try:
        importlib.import_module("wandb")
    except ImportError as err:
        raise RuntimeError(
            "the recipe sets `wandb` (Weights & Biases tracking) but wandb is not installed: "
            "pip install 'videoqa[tracking]', or remove the `wandb` setting"
        ) from err


class WandbRun:
    """One W&B run: started on rank 0 by `start`, fed by `log`, ended by `finish` (a no-op before `start`)."""

    def __init__(self, settings: WandbSettings | None) -> None:
        self.settings = settings
        self.run: Run | None = None

    def start(self, cfg: TrainConfig, out: Path) -> None:
        """Start (or, when OUTPUT_DIR holds the id of an earlier launch, resume) the run; params = the resolved
        config. Explicit settings win over wandb's environment variables, which win over our defaults."""
        if self.settings is None:
            return
        import wandb

        s = self.settings
        id_file = out / RUN_ID_FILE
        # A resumed training run (same output_dir) continues its W&B run: steps it had logged past its last
        # checkpoint are logged again with the same values (exact resume), which W&B ignores as already seen.
        run_id = os.environ.get("WANDB_RUN_ID") or (
            id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]
        )
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(
            project=s.project or os.environ.get("WANDB_PROJECT") or "videoqa",
            entity=s.entity,  # None: WANDB_ENTITY, else the account's default
            name=s.name or os.environ.get("WANDB_NAME") or out.resolve().name,
            mode=s.mode,  # None: WANDB_MODE, else online
            tags=s.tags or None,
            group=s.group,
            dir=None if os.environ.get("WANDB_DIR") else str(out),  # files under OUTPUT_DIR/wandb
            id=run_id,
            resume="allow",
            config=cfg.model_dump(),
        )

    def log(self, step: int, values: dict[str, float]) -> None:
        """Scalars at the optimizer step (several calls for one step fill the same history row)."""
        if self.run is not None:
            self.run.log(values, step=step)

    def finish(self, failed: bool, artefacts: list[Path] | None = None) -> None:
        """End the run: exit code 1 (W&B: Failed) when training raised, else 0, after saving the artefacts that
        exist (loss.png, config.yaml)."""
        if self.run is None:
            return
        run, self.run = self.run, None
        try:
            for path in artefacts or []:
                if path.exists():
                    run.save(str(path), base_path=str(path.parent), policy="now")
        finally:
            import wandb

            run.finish(exit_code=1 if failed else 0)
            # Stop wandb's service process (wandb-core) now rather than at interpreter exit: `train` may be one
            # call in a longer-lived process (tests, notebooks, a sweep driver), which it must not leave behind.
            wandb.teardown()
