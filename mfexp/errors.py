"""User-facing errors: one clear line naming the thing at fault, and a non-zero exit."""
from __future__ import annotations


class MfexpError(Exception):
    """Base for errors caused by the user's input; printed as one line, exit code 2."""

    exit_code = 2


class ConfigError(MfexpError):
    """A config value is invalid (unknown model, m outside [0, 1], ...)."""


class DataError(MfexpError):
    """The data is unusable (missing folder, corrupt image, a single class, ...)."""


class SearchFailed(RuntimeError):
    """The policy search cannot go on (the baseline or the no-policy screening run failed); exit 1.

    Defined here, not in the sweeper package: Hydra's plugin scan re-executes modules under
    ``hydra_plugins``, which would give a class defined there a second identity.
    """
