"""A Hydra callback for the kill -9 drill in ``tests/test_scale.py``: SIGKILL the process right after a
screening candidate has logged its first epoch, so the kill lands mid-candidate every time (polling the
server from outside could miss a candidate that trains in 0.3 s).

    PYTHONPATH=tests/faults python -m mfexp -m ... +hydra.callbacks.kill._target_=kill_mid_candidate.KillMidCandidate
"""
from __future__ import annotations

import os
import signal

from hydra.experimental.callback import Callback


class KillMidCandidate(Callback):
    def on_job_start(self, config, **kwargs) -> None:
        if config.tracking.role != "candidate":
            return
        import mlflow

        log_metrics = mlflow.log_metrics

        def log_then_die(*args, **kw):
            log_metrics(*args, **kw)
            os.kill(os.getpid(), signal.SIGKILL)

        mlflow.log_metrics = log_then_die
