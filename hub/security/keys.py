"""The built-in authorization server's signing key: a private JWK in a file.

Where the file does not exist (the embedded default), an RSA key is made and written with
mode 0600. In production, point HUB_SIGNING_KEY_FILE at a key kept as a secret.
"""

from __future__ import annotations

import copy
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from joserfc.jwk import KeySet, RSAKey

SIGNING_ALGORITHM = "RS256"


@cache
def signing_key(path: Path) -> dict[str, Any]:
    """The private JWK at `path` (created if missing), with a `kid`."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = RSAKey.generate_key(2048, parameters={"alg": SIGNING_ALGORITHM, "use": "sig"})
        data = key.as_dict(private=True)
        data["kid"] = key.thumbprint()
        _publish(path, json.dumps(data))
    data = json.loads(path.read_text(encoding="utf-8"))
    if "kid" not in data:
        data["kid"] = RSAKey.import_key(data).thumbprint()
    return dict(data)


def _publish(path: Path, text: str) -> None:
    """Write `text` to `path` whole or not at all: written to a file of its own, then linked
    under the name, which fails if another process got there first (replicas starting
    together on one shared key file); that one's key is kept, as every replica must use it."""
    draft = path.with_name(f".{path.name}.{os.getpid()}.draft")
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(draft, path)
    except FileExistsError:
        pass
    finally:
        draft.unlink(missing_ok=True)


@cache
def signing_key_set(path: Path) -> KeySet:
    """The private JWK at `path` as a joserfc key set (what tokens are signed with).

    Imported once per file, like `signing_key`: importing an RSA private key checks it,
    about 50 ms, which every token issued and every app made used to pay again."""
    return KeySet.import_key_set({"keys": [signing_key(path)]})


def public_jwks(path: Path) -> dict[str, Any]:
    """The JWKS that verifies tokens signed with the key at `path` (served at /auth/jwks)."""
    return copy.deepcopy(_public_jwks(path))


@cache
def _public_jwks(path: Path) -> dict[str, Any]:
    private = signing_key(path)
    public = RSAKey.import_key(private).as_dict(private=False)
    public.update({"kid": private["kid"], "alg": SIGNING_ALGORITHM, "use": "sig"})
    return {"keys": [public]}
