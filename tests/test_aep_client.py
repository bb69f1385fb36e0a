"""The platform client against the loopback sandbox: token and headers, retries within their bounds,
fail-fast errors that carry the platform's message, one token refresh on 401, no secret anywhere."""

from __future__ import annotations

import logging
import time

import pytest
from aep import config
from enrich.aep.client import (
    Client,
    OutcomeUnknown,
    PlatformError,
    RedactingFilter,
    Secret,
    client_secret,
    redact,
    retry_after,
)
from enrich.errors import ConfigError

BATCHES = "/data/foundation/import/batches"



def _client(box, *extra, sleeps=None):
    cfg = config(box, None, *extra)
    return Client(cfg.aep, Secret(box.secret), sleep=(sleeps.append if sleeps is not None else lambda s: None))


def _create(client, dataset):
    return client.json("POST", BATCHES, what="create batch", ok=(201,),
                       json={"datasetId": dataset, "inputFormat": {"format": "parquet"}})


def test_token_and_the_four_headers_open_the_platform(box):
    dataset = box.add_dataset()
    client = _client(box)
    batch = _create(client, dataset)
    assert batch["status"] == "loading" and batch["id"] in box.batches
    assert client.tokens_issued == box.tokens_issued == 1
    _create(client, dataset)
    assert box.tokens_issued == 1  # the token is reused until it nears expiry


def test_wrong_credentials_fail_fast_without_showing_the_secret(box):
    cfg = config(box, None)
    client = Client(cfg.aep, Secret("not-the-secret-value"), sleep=lambda s: None)  # echoed by the server
    with pytest.raises(PlatformError) as err:
        _create(client, box.add_dataset())
    assert err.value.status == 400 and "invalid_client" in str(err.value)
    assert "not-the-secret-value" not in str(err.value)
    assert [r for r in box.requests if r[1] == "/ims/token/v3"] == [("POST", "/ims/token/v3", 400)]


@pytest.mark.parametrize(("kind", "retry_after"), [("429", "2"), ("429", None), ("500", None), ("503", None)])
def test_throttling_and_server_errors_are_retried(box, kind, retry_after):
    dataset = box.add_dataset()
    sleeps: list[float] = []
    client = _client(box, sleeps=sleeps)
    box.fault("POST", f"^{BATCHES}$", kind, times=2, retry_after=retry_after)
    _create(client, dataset)
    statuses = [s for m, p, s in box.requests if p == BATCHES]
    assert statuses == [int(kind), int(kind), 201]
    if retry_after:
        assert sleeps == [2.0, 2.0]  # the server's word, not the backoff
    else:
        assert len(sleeps) == 2 and all(0.0 <= s <= 0.05 for s in sleeps)  # jitter under the cap


def test_retries_stop_at_their_bounds_with_a_message_naming_them(box):
    dataset = box.add_dataset()
    client = _client(box, "aep.max_attempts=3")
    box.fault("POST", f"^{BATCHES}$", "503", times=10)
    with pytest.raises(PlatformError, match=r"still failing after 3 tries .*aep.max_attempts=3.*503"):
        _create(client, dataset)
    assert len([r for r in box.requests if r[1] == BATCHES]) == 3
    # A Retry-After beyond the total budget is not waited for.
    box.faults.clear()
    box.fault("POST", f"^{BATCHES}$", "429", retry_after="3600")
    with pytest.raises(PlatformError, match="after 1 tries"):
        _create(_client(box, "aep.max_retry_seconds=60"), dataset)


def test_client_errors_fail_fast_with_the_platform_message(box):
    client = _client(box)
    with pytest.raises(PlatformError, match="dataset 'nope' not found") as err:
        _create(client, "nope")
    assert err.value.status == 400 and err.value.exit_code == 4
    assert [r for r in box.requests if r[1] == BATCHES] == [("POST", BATCHES, 400)]


def test_dropped_connections_and_slow_responses_are_retried(box):
    dataset = box.add_dataset()
    client = _client(box, "aep.timeout_seconds=0.5")
    box.fault("POST", f"^{BATCHES}$", "drop")
    box.fault("POST", f"^{BATCHES}$", "slow", seconds=1.5)
    batch = _create(client, dataset)
    assert batch["id"] in box.batches and len(box.batches) == 1
    deadline = time.monotonic() + 5  # the slow handler logs itself when its sleep ends
    while len([r for r in box.requests if r[1] == BATCHES]) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(s for m, p, s in box.requests if p == BATCHES) == [-1, -1, 201]


def test_an_expired_token_is_replaced_once(box):
    dataset = box.add_dataset()
    client = _client(box)
    _create(client, dataset)
    box.expire_tokens()
    _create(client, dataset)
    assert box.tokens_issued == 2
    # A platform that keeps refusing fresh tokens is not asked forever.
    box.fault("POST", f"^{BATCHES}$", "expire_tokens", times=5)
    with pytest.raises(PlatformError, match="401"):
        _create(client, dataset)
    assert box.tokens_issued == 3


def test_secrets_come_from_the_environment_and_never_show(box, caplog):
    cfg = config(box, None)
    with pytest.raises(ConfigError, match=r"\$AEP_CLIENT_SECRET"):
        client_secret(cfg.aep, env={})
    secret = client_secret(cfg.aep, env={"AEP_CLIENT_SECRET": box.secret})
    assert secret.value == box.secret and box.secret not in repr(secret) and box.secret not in f"{secret}"
    caplog.set_level(logging.DEBUG)  # urllib3's connection logs too
    caplog.handler.addFilter(RedactingFilter())  # what install_redaction puts on the jobs' handlers
    client = Client(cfg.aep, secret, sleep=lambda s: None)
    box.fault("POST", f"^{BATCHES}$", "429")
    _create(client, box.add_dataset())
    token = next(iter(box.tokens))
    logging.getLogger("enrich").error("a careless message: %s and %s", box.secret, token)
    assert caplog.records and box.secret not in caplog.text and token not in caplog.text
    assert "a careless message: *** and ***" in caplog.text
    assert redact(f"x{box.secret}y") == "x***y" and redact("secretless text") == "secretless text"


def test_retry_after_in_seconds_or_dates():
    class Answer:
        def __init__(self, value):
            self.headers = {"Retry-After": value} if value is not None else {}

    assert retry_after(Answer("7")) == 7.0 and retry_after(Answer(None)) is None
    assert retry_after(Answer("soon")) is None
    assert retry_after(Answer("Wed, 21 Oct 2015 07:28:00 -0000")) < 0  # a naive date is UTC, long past
    assert -1 < retry_after(Answer(__import__("email.utils").utils.formatdate(time.time() + 30, usegmt=True))) - 30 < 1


def test_requests_that_create_are_not_repeated_blindly(box):
    dataset = box.add_dataset()
    client = _client(box)
    box.fault("POST", f"^{BATCHES}$", "lost")
    with pytest.raises(OutcomeUnknown, match="may have been carried out"):
        client.json("POST", BATCHES, what="create batch", ok=(201,), idempotent=False,
                    json={"datasetId": dataset, "inputFormat": {"format": "parquet"}})
    assert len(box.batches) == 1  # it happened; the caller is told, not left with a second one
    box.fault("POST", f"^{BATCHES}$", "503")  # an error status is certain: retried
    client.json("POST", BATCHES, what="create batch", ok=(201,), idempotent=False,
                json={"datasetId": dataset, "inputFormat": {"format": "parquet"}})
    assert len(box.batches) == 2


def test_plain_http_only_on_loopback():
    from enrich.config import load_config

    cfg = load_config(overrides=["aep.platform_url=http://platform.example.com", "aep.org_id=X@AdobeOrg",
                                 "aep.client_id=c"])
    with pytest.raises(ConfigError, match="use https"):
        Client(cfg.aep, Secret("s3cr3t-value"))


def test_credentials_go_only_to_the_platform_and_tls_errors_fail_at_once(box):
    client = _client(box)
    with pytest.raises(PlatformError, match=r"refusing to send credentials to http://elsewhere\.example"):
        client.json("GET", "http://elsewhere.example/data/foundation/export/files/f1", what="follow a link")
    assert client.url(f"{box.url}/x?start=2") == f"{box.url}/x?start=2"
    # TLS to a server that speaks plain HTTP: a certificate/handshake failure is not retried.
    port = box.url.rsplit(":", 1)[1]
    cfg = config(box, None, f"aep.platform_url=https://127.0.0.1:{port}", f"aep.ims_url=https://127.0.0.1:{port}")
    with pytest.raises(PlatformError, match="TLS verification failed"):
        Client(cfg.aep, Secret(box.secret), sleep=lambda s: None).token()
    assert not [r for r in box.requests if r[1] == "/ims/token/v3"]
