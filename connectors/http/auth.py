"""Credentials of an HTTP peer, from configuration. Secrets never sit in the configuration:
basic and bearer auth name the environment variable that holds the password or token, read
when a client is created."""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class MissingSecret(Exception):
    """The environment variable named in a source's auth configuration is unset or empty."""

    def __init__(self, source: str, variable: str) -> None:
        super().__init__(
            f"Source {source!r}: the environment variable {variable} that should hold its "
            "secret is not set."
        )
        self.source = source
        self.variable = variable


class NoAuth(BaseModel):
    """No credentials (a peer on a trusted network)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["none"] = "none"

    def httpx_auth(self, source: str, environ: Mapping[str, str]) -> httpx.Auth | None:
        return None

    def describe(self) -> str:
        return "its auth setting: the source is configured without credentials"


class BasicAuth(BaseModel):
    """HTTP basic auth; the password comes from the environment variable `password_env`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["basic"] = "basic"
    username: str = Field(min_length=1)
    password_env: str = Field(pattern=ENV_NAME)

    def httpx_auth(self, source: str, environ: Mapping[str, str]) -> httpx.Auth | None:
        return httpx.BasicAuth(self.username, secret(source, self.password_env, environ))

    def describe(self) -> str:
        return f"the user {self.username!r} and the password in ${self.password_env}"


class BearerAuth(BaseModel):
    """A bearer token from the environment variable `token_env` (issued out of band)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["bearer"] = "bearer"
    token_env: str = Field(pattern=ENV_NAME)

    def httpx_auth(self, source: str, environ: Mapping[str, str]) -> httpx.Auth | None:
        return _BearerToken(secret(source, self.token_env, environ))

    def describe(self) -> str:
        return f"the bearer token in ${self.token_env}"


class _BearerToken(httpx.Auth):
    def __init__(self, token: str) -> None:
        self._header = f"Bearer {token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


def secret(source: str, variable: str, environ: Mapping[str, str]) -> str:
    """The value of `variable`; MissingSecret when it is unset or empty."""
    value = environ.get(variable, "")
    if not value:
        raise MissingSecret(source, variable)
    return value
