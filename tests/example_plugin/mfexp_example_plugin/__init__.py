"""Example mfexp plugin: configs under conf/ (found via hydra_plugins/mfexp_example_plugin), code here."""
