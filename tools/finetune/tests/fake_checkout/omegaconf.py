"""Shim of omegaconf for the stand-in checkout: JSON files (a subset of YAML) as plain dicts."""
import json


class OmegaConf:
    @staticmethod
    def load(path):
        with open(path, encoding="utf-8") as f:
            return json.load(f)

    @staticmethod
    def to_container(cfg, resolve=False):
        return cfg

    @staticmethod
    def create(cfg):
        # tools/export/loaders.py hands the config to instantiate_from_config as an OmegaConf node,
        # as the reference scripts do; the stand-in checkout works on plain dicts.
        return cfg
