"""One place turns the settings into every Kafka client's security options (aiokafka's and Faust's)."""

import ssl

import faust
import pytest

from agents.app import faust_credentials
from infra.kafka import client_options
from infra.settings import Settings

URL = "kafka://127.0.0.1:9093"


def test_plaintext_is_the_default_and_adds_nothing():
    settings = Settings(kafka_url=URL)
    assert client_options(settings) == {"bootstrap_servers": "127.0.0.1:9093", "security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None


def test_sasl_names_the_mechanism_and_the_user_for_aiokafka_and_faust():
    settings = Settings(kafka_url=URL, kafka_security_protocol="SASL_PLAINTEXT", kafka_username="lfz",
                        kafka_password="secret")
    options = client_options(settings)
    assert (options["security_protocol"], options["sasl_mechanism"], options["sasl_plain_username"],
            options["sasl_plain_password"]) == ("SASL_PLAINTEXT", "SCRAM-SHA-512", "lfz", "secret")
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.protocol.value, credentials.mechanism.value, credentials.username) == \
        ("SASL_PLAINTEXT", "SCRAM-SHA-512", "lfz")


def test_tls_makes_a_verifying_context_for_both():
    settings = Settings(kafka_url=URL, kafka_security_protocol="SASL_SSL", kafka_username="lfz", kafka_password="x")
    options = client_options(settings)
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert faust_credentials(settings).protocol.value == "SASL_SSL"
    only_tls = Settings(kafka_url=URL, kafka_security_protocol="SSL")
    assert isinstance(faust_credentials(only_tls), faust.SSLCredentials)
    assert "sasl_mechanism" not in client_options(only_tls)


def test_sasl_without_a_username_is_a_clear_error():
    with pytest.raises(RuntimeError, match="LFZ_KAFKA_USERNAME"):
        client_options(Settings(kafka_url=URL, kafka_security_protocol="SASL_PLAINTEXT"))
