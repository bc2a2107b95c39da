"""The lvdm checkouts' helper: config {"target": "module.Class", "params": {...}} → instance."""
import importlib


def instantiate_from_config(config):
    module, cls = config["target"].rsplit(".", 1)
    return getattr(importlib.import_module(module), cls)(**config.get("params", dict()))
