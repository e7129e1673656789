"""Site configuration: models, TOML loading and readable errors."""

from edge.config.load import DEFAULT_PATH, default_path, load_config, parse_config
from edge.config.site import SiteConfig

__all__ = ["DEFAULT_PATH", "SiteConfig", "default_path", "load_config", "parse_config"]
