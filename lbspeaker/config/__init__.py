"""The pool ConfigMap: models, parsing, validation, merging and summaries (MetalLB v0.12 schema).

The controller and the speaker use only what is exported here.
"""

from lbspeaker.config.errors import ConfigError
from lbspeaker.config.load import load_file
from lbspeaker.config.merge import merge_configs
from lbspeaker.config.models import (
    AddressPool,
    BfdProfile,
    BgpAdvertisement,
    Config,
    NodeSelector,
    Peer,
    SecretRef,
    SelectorRequirement,
    selects,
)
from lbspeaker.config.parse import CONFIG_KEY, configmap_source, parse_config, parse_configmap
from lbspeaker.config.summary import summarize

__all__ = [
    "CONFIG_KEY",
    "AddressPool",
    "BfdProfile",
    "BgpAdvertisement",
    "Config",
    "ConfigError",
    "NodeSelector",
    "Peer",
    "SecretRef",
    "SelectorRequirement",
    "configmap_source",
    "load_file",
    "merge_configs",
    "parse_config",
    "parse_configmap",
    "selects",
    "summarize",
]
