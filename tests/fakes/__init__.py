"""Test doubles for imagegate's upstream providers (see :mod:`tests.fakes.upstream`)."""

from tests.fakes.upstream import Call, FakeUpstream
from tests.fakes.upstream_common import FakeRequest, FakeResponse

__all__ = ["Call", "FakeRequest", "FakeResponse", "FakeUpstream"]
