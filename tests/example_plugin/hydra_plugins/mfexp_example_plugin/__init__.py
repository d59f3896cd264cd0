"""Hydra discovers this by scanning the ``hydra_plugins`` namespace package: it appends the
plugin's config folder to mfexp's search path, so its YAML files join mfexp's config groups."""
from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


class MfexpExampleSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        # pkg:// reads package resources, so it works from a wheel, an editable install or PYTHONPATH.
        search_path.append(provider="mfexp-example-plugin", path="pkg://mfexp_example_plugin/conf")
