"""S3ObjectStore against the real S3 server of `make services`: the shared contract, and the failures S3 adds."""

from __future__ import annotations

import pytest

from infra.objectstore import ObjectStore, ObjectStoreUnavailable, S3ObjectStore, open_object_store
from infra.settings import Settings
from tests.unit.infra.objectstore_contract import ObjectStoreContract


class TestS3ObjectStore(ObjectStoreContract):
    @pytest.fixture
    def store(self, object_store: ObjectStore) -> ObjectStore:
        return object_store

    @pytest.fixture
    def prefix(self, object_prefix: str) -> str:
        return object_prefix


def test_settings_from_services_env_open_the_s3_store(settings: Settings) -> None:
    store = open_object_store(settings)
    assert isinstance(store, S3ObjectStore)
    store.health()


def test_health_names_a_missing_bucket(settings: Settings, unique: str) -> None:
    store = S3ObjectStore(
        settings.object_store_url, settings.s3_access_key, settings.s3_secret_key, f"lfz-missing-{unique}"
    )
    with pytest.raises(ObjectStoreUnavailable, match="does not exist"):
        store.health()


def test_health_fails_on_wrong_credentials(settings: Settings) -> None:
    store = S3ObjectStore(settings.object_store_url, settings.s3_access_key, "not-the-secret", settings.bucket)
    with pytest.raises(ObjectStoreUnavailable):
        store.health()
