"""HL7 acknowledgments (MSA, ERR) read into DeliveryResults."""

from __future__ import annotations

import pytest

from connectors.hl7v2_mllp import acknowledgment_result
from mappings.hl7v2.tokenizer import parse_message

MSH = "MSH|^~\\&|EHR|ST-MARY|HUB|SO|20240101120001||ACK^R01^ACK|A1|P|{version}\r"


def result_of(body: str, version: str = "2.5.1") -> tuple[bool, str, bool, str]:
    raw = (MSH.format(version=version) + body).encode()
    result = acknowledgment_result(parse_message(raw), raw)
    assert result.response == raw
    return result.accepted, result.code, result.retryable, result.detail


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("MSA|AA|M1", (True, "AA", False, "")),
        ("MSA|CA|M1", (True, "CA", False, "")),
        ("MSA|aa|M1|Stored", (True, "AA", False, "Stored")),
        # Table 0008: AR is a failure unrelated to content; the sender may resend.
        ("MSA|AR|M1", (False, "AR", True, "")),
        ("MSA|AE|M1|Try later", (False, "AE", True, "Try later")),
        ("MSA|CE|M1", (False, "CE", True, "")),
        ("MSA|CR|M1", (False, "CR", False, "")),
        ("MSA|ZZ|M1", (False, "ZZ", True, "")),
        ("MSA||M1", (False, "unknown", True, "")),
        # ERR-3 (v2.5+): Table 0357 condition, ERR-8 user message first, else ERR-3.2.
        (
            "MSA|AE|M1\rERR|||101^Required field missing^HL70357|E||||PID-3 is empty",
            (False, "AE", False, "PID-3 is empty"),
        ),
        (
            "MSA|AR|M1\rERR|||203^Unsupported version id^HL70357|E",
            (False, "AR", False, "Unsupported version id"),
        ),
        (
            "MSA|AE|M1\rERR|||206^Application record locked^HL70357|E",
            (False, "AE", True, "Application record locked"),
        ),
        (
            "MSA|AE|M1\rERR|||204^Unknown key identifier^HL70357|E",
            (False, "AE", True, "Unknown key identifier"),
        ),
    ],
)
def test_msa_and_err(body: str, expected: tuple[bool, str, bool, str]) -> None:
    assert result_of(body) == expected


def test_err_1_of_older_versions() -> None:
    body = "MSA|AE|M1\rERR|PID^1^3^102&Data type error&HL70357"
    assert result_of(body, "2.3") == (False, "AE", False, "Data type error")


def test_msa_6_of_older_versions() -> None:
    body = "MSA|AR|M1||||200^Unsupported message type^HL70357"
    assert result_of(body, "2.3") == (False, "AR", False, "Unsupported message type")


def test_msa_3_text_comes_before_err_text() -> None:
    body = "MSA|AE|M1|See ERR\rERR|||207^Application internal error^HL70357|E"
    assert result_of(body) == (False, "AE", True, "See ERR")
