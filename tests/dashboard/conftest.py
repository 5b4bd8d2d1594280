"""People the dashboard page tests share: two organizations' owners and a signed-in browser."""
from __future__ import annotations

import pytest
from django.test import Client

from tenants.services import user_signup

PASSWORD = "violet-harbour-lantern-42"


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def ada():
    return user_signup(email="ada@example.com", password=PASSWORD, organization_name="Analytical Engines")


@pytest.fixture
def grace():
    return user_signup(email="grace@example.com", password=PASSWORD, organization_name="Compilers Inc")


@pytest.fixture
def ada_client(ada) -> Client:
    return client_for(ada.user)
