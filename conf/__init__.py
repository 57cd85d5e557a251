"""Configuration: the pydantic schema and the profile loader."""

from conf.loader import ConfigError, apply_overrides, config_from_dict, config_hash, load_config
from conf.schema import STAGES, Config

__all__ = ["Config", "ConfigError", "STAGES", "apply_overrides", "config_from_dict", "config_hash",
           "load_config"]
