"""Owner proofs: an HMAC-SHA256 of a command's value under the owner's key, in two record headers."""

import hashlib
import hmac

import pytest

from events import DecodeError
from events.proof import OWNER_HEADER, SIGNATURE_HEADER, Signer, owner_of

KEYS = ["alice-key-123", "bob-key-456"]
VALUE = b'{"type": "CancelRequested", "job_id": "j1"}'


def test_a_signed_value_names_its_signer_whatever_the_header_shape():
    signer = Signer(KEYS)
    headers = signer.headers(owner_of("bob-key-456"), VALUE)
    assert signer.signer_of(headers, VALUE) == owner_of("bob-key-456")
    as_mapping = {name: value for name, value in headers}
    assert signer.signer_of(as_mapping, VALUE) == owner_of("bob-key-456")
    # The documented recipe, by hand: what kcat + openssl produce.
    by_hand = [(OWNER_HEADER.encode(), owner_of("alice-key-123").encode()),
               (SIGNATURE_HEADER.encode(), hmac.new(b"alice-key-123", VALUE, hashlib.sha256).hexdigest().encode())]
    assert signer.signer_of(by_hand, VALUE) == owner_of("alice-key-123")


@pytest.mark.parametrize("forge, needle", [
    (lambda h: [], "needs the headers"),
    (lambda h: h[:1], "needs the headers"),
    (lambda h: [(OWNER_HEADER, h[0][1]), (SIGNATURE_HEADER, b"0" * 64)], "not a valid signature"),
    (lambda h: [(OWNER_HEADER, owner_of("bob-key-456").encode()), h[1]], "not a valid signature"),  # alice's proof
    (lambda h: [(OWNER_HEADER, owner_of("mallory").encode()),
                (SIGNATURE_HEADER, hmac.new(b"mallory", VALUE, hashlib.sha256).hexdigest().encode())],
     "not a valid signature"),  # a key the system does not know
])
def test_a_missing_or_forged_proof_is_a_decode_error_naming_the_headers(forge, needle):
    signer = Signer(KEYS)
    headers = forge(signer.headers(owner_of("alice-key-123"), VALUE))
    with pytest.raises(DecodeError) as error:
        signer.signer_of(headers, VALUE)
    assert error.value.field == "headers" and needle in error.value.reason and error.value.job_id is None


def test_a_proof_covers_the_value_byte_for_byte():
    signer = Signer(KEYS)
    headers = signer.headers(owner_of("alice-key-123"), VALUE)
    with pytest.raises(DecodeError):
        signer.signer_of(headers, VALUE.replace(b"j1", b"j2"))


def test_without_keys_nothing_is_signed():
    assert not Signer([]).enabled and Signer([]).headers("anyone", VALUE) == []
    assert Signer(KEYS).headers(None, VALUE) == []
