"""Pytest fixtures for the local Salesforce-compatible server (registered from conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from personalization_pipeline.testing.salesforce_server import (
    Credentials,
    SalesforceServer,
    generate_jwt_keypair,
)


@pytest.fixture(scope="session")
def jwt_keypair() -> tuple[bytes, bytes]:
    """(private PEM, public PEM); RSA generation is slow enough to do once per session."""
    return generate_jwt_keypair()


@pytest.fixture
def salesforce_server(jwt_keypair: tuple[bytes, bytes]) -> Iterator[SalesforceServer]:
    """A fresh local org on a free port, empty, accepting every login flow."""
    with SalesforceServer(Credentials(jwt_public_key_pem=jwt_keypair[1])) as server:
        yield server
