"""Typed settings: config/hub.yaml, overridden by HUB_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_FILE = REPO_ROOT / "config" / "hub.yaml"


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the `hub:` section of the YAML file named by HUB_CONFIG (default config/hub.yaml)."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path.is_file():
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            self._data = dict(document.get("hub") or {})

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {key: value for key, value in self._data.items() if value is not None}


class Settings(BaseSettings):
    """Everything the hub reads at start-up. Environment variables win over the YAML file."""

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="forbid")

    config_file: Path = Field(default=DEFAULT_CONFIG_FILE, alias="HUB_CONFIG")
    database_url: str = f"sqlite:///{REPO_ROOT / 'var' / 'hub.db'}"
    base_url: str | None = None
    """Public base of the FHIR API (https://hub.example.org/fhir); else from the request."""
    max_request_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    default_page_size: int = Field(default=50, gt=0)
    max_page_size: int = Field(default=500, gt=0)
    host: str = "127.0.0.1"
    port: int = Field(default=8080, gt=0, lt=65536)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        import os

        path = Path(os.environ.get("HUB_CONFIG", str(DEFAULT_CONFIG_FILE)))
        return (
            init_settings,
            env_settings,
            _YamlSource(settings_cls, path),
            file_secret_settings,
        )
