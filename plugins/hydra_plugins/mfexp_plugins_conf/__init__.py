"""Registers the built-in plugins' config schemas (``synth/gan_schema``) when Hydra scans ``hydra_plugins``.

The core never imports a plugin, so a plugin registers its own schema the way a third-party package
would; only the settings dataclass is imported here, never the plugin's torch or MLflow code.
"""
from hydra.core.config_store import ConfigStore
from mfexp_plugins.gan.settings import GanConf

ConfigStore.instance().store(group="synth", name="gan_schema", node=GanConf, provider="mfexp")
