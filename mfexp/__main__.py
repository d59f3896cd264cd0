"""`python -m mfexp`: one tracked training run. `python -m mfexp -m`: the policy search."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI at import otherwise

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from mfexp.config import register_configs  # noqa: E402
from mfexp.errors import MfexpError  # noqa: E402


def config_dir() -> str:
    """conf/ ships inside the wheel as mfexp/conf; in a source checkout it sits beside the package."""
    here = Path(__file__).resolve().parent
    packaged = here / "conf"
    return str(packaged if packaged.is_dir() else here.parent / "conf")


register_configs()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> float:
    from mfexp.run import run

    try:
        return run(cfg)
    except MfexpError as e:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweeper sees the failed JobReturn and goes on
        logging.getLogger("mfexp").error("%s", e)
        print(f"mfexp: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
