"""The MLLP listener's configuration and lifecycle checks that need no socket."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import ValidationError

from connectors.base import Envelope
from connectors.hl7v2_mllp import (
    ListenerStateError,
    MllpListener,
    MllpListenerConfig,
    MllpTlsConfig,
)


async def no_answer(envelope: Envelope) -> bytes:
    return b""


def test_anyone_is_allowed_when_the_list_is_empty() -> None:
    config = MllpListenerConfig(name="adt-in", port=0)
    assert config.allows("203.0.113.9")
    assert config.allows("::1")


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.1.2.3", True),
        ("192.0.2.7", True),
        ("192.0.2.8", False),
        ("::ffff:10.9.9.9", True),  # an IPv4 peer seen through a dual-stack socket
        ("2001:db8::5", True),
        ("2001:db9::5", False),
        ("127.0.0.1", False),
        ("not an address", False),
    ],
)
def test_allowed_senders_are_addresses_or_networks(address: str, allowed: bool) -> None:
    config = MllpListenerConfig(
        name="adt-in", port=0, allowed_senders=["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]
    )
    assert config.allows(address) is allowed


@pytest.mark.parametrize(
    "fields",
    [
        {"allowed_senders": ["10.0.0.1/8"]},  # host bits set: a typo, not a network
        {"allowed_senders": ["st-mary.example"]},
        {"port": 70000},
        {"max_message_bytes": 0},
        {"idle_timeout_seconds": 0},
        {"max_connections": 0},
        {"name": ""},
        {"unknown": 1},
    ],
)
def test_invalid_configuration_is_refused(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        MllpListenerConfig.model_validate({"name": "adt-in", "port": 0, **fields})


def test_client_certificates_need_a_ca() -> None:
    with pytest.raises(ValidationError):
        MllpTlsConfig(certfile=Path("a.crt"), keyfile=Path("a.key"), require_client_cert=True)


def test_bound_port_and_stop_before_start() -> None:
    listener = MllpListener(MllpListenerConfig(name="adt-in", port=0), no_answer)
    with pytest.raises(ListenerStateError):
        _ = listener.bound_port
    asyncio.run(listener.stop())  # nothing to stop


def test_start_twice_is_refused() -> None:
    async def scenario() -> None:
        listener = MllpListener(MllpListenerConfig(name="adt-in", port=0), no_answer)
        async with listener:
            assert listener.bound_port > 0
            with pytest.raises(ListenerStateError):
                await listener.start()

    asyncio.run(scenario())
