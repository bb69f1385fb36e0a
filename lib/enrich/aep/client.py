"""One HTTP client for every platform call: token, headers, retries, errors that name the problem.

- Token: OAuth server-to-server, `POST {ims}/ims/token/v3` (client credentials). There is no
  refresh token; a new one is asked for when the current one is within `REFRESH_MARGIN` of its
  expiry, and once when the platform answers 401.
- Retries: connection errors, timeouts, 429 and 5xx, with exponential backoff and full jitter,
  honouring `Retry-After`, bounded by `aep.max_attempts` and `aep.max_retry_seconds`. Any other 4xx
  fails at once with the platform's own message.
- Secrets: the client secret and tokens are `Secret`s (their repr is masked), are only ever put in
  a request body or header, and every message this module raises or logs is passed through
  `redact`, which masks any secret value the process knows about.
- TLS: `requests` verifies certificates; plain `http://` is refused except on loopback (the sandbox).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from enrich.config import AepConfig
from enrich.errors import ConfigError, EnrichError

log = logging.getLogger(__name__)

SECRET_ENV = "AEP_CLIENT_SECRET"
REFRESH_MARGIN = dt.timedelta(minutes=5)
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
MIN_MASKED = 6  # shorter values are not masked: they would mask ordinary words (real secrets are long)

_known_secrets: set[str] = set()
_known_lock = threading.Lock()


class PlatformError(EnrichError):
    """The platform refused a request, or it kept failing past the retry bounds."""

    exit_code = 4

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(redact(message))
        self.status = status


class OutcomeUnknown(PlatformError):
    """A request that creates something was sent and its answer lost: it may or may not have happened."""


class Secret:
    """A string that never shows itself: `str()`/`repr()` are masked; `.value` is the secret."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not value:
            raise ValueError("empty secret")
        self._value = value
        if len(value) >= MIN_MASKED:
            with _known_lock:
                _known_secrets.add(value)

    @property
    def value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def redact(text: str) -> str:
    """`text` with every secret value this process holds (client secret, tokens) masked."""
    with _known_lock:
        known = sorted(_known_secrets, key=len, reverse=True)
    for value in known:
        text = text.replace(value, "***")
    return text


class RedactingFilter(logging.Filter):
    """Masks known secrets in every record that passes a handler (belt and braces: nothing here logs
    one, but a library's debug output might)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def install_redaction() -> None:
    """Attach `RedactingFilter` to every handler of the root logger."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def client_secret(cfg: AepConfig, env: Mapping[str, str] | None = None) -> Secret:
    """The client secret from `$AEP_CLIENT_SECRET`, else from the Databricks secret scope."""
    env = os.environ if env is None else env
    if env.get(SECRET_ENV):
        return Secret(env[SECRET_ENV])
    if cfg.secret_scope:
        try:
            from pyspark.dbutils import DBUtils  # type: ignore[import-not-found]
            from pyspark.sql import SparkSession

            spark = SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()
            return Secret(DBUtils(spark).secrets.get(scope=cfg.secret_scope, key=cfg.secret_key))
        except ImportError:
            raise ConfigError(f"aep.secret_scope={cfg.secret_scope!r} needs Databricks (dbutils); elsewhere "
                              f"set ${SECRET_ENV}") from None
        except Exception as exc:
            raise ConfigError(f"aep.secret_scope={cfg.secret_scope!r}: cannot read key {cfg.secret_key!r} "
                              f"({type(exc).__name__})") from None
    raise ConfigError(f"no client secret: set ${SECRET_ENV} (or aep.secret_scope on Databricks); it is "
                      "never read from a config file")


def check_url(url: str, key: str) -> str:
    """`url` without a trailing slash; http:// only on loopback (certificates are always verified)."""
    parts = urlsplit(url)
    if parts.scheme == "http" and parts.hostname not in LOOPBACK:
        raise ConfigError(f"{key}={url}: use https (plain http is only accepted on loopback, for the sandbox)")
    return url.rstrip("/")


@dataclass(frozen=True)
class Retry:
    """Bounds of retrying one request."""

    attempts: int = 8
    backoff: float = 1.0
    max_backoff: float = 60.0
    total: float = 900.0
    timeout: float = 120.0

    @classmethod
    def of(cls, cfg: AepConfig) -> Retry:
        return cls(attempts=cfg.max_attempts, backoff=cfg.backoff_seconds, max_backoff=cfg.max_backoff_seconds,
                   total=cfg.max_retry_seconds, timeout=cfg.timeout_seconds)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Wait before try `attempt + 1`: the server's `Retry-After` when given, else full jitter."""
        if retry_after is not None:
            return max(0.0, retry_after)
        return random.uniform(0.0, min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))


def retry_after(response: requests.Response) -> float | None:
    """Seconds from a `Retry-After` header (delta-seconds or an HTTP date), if any."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=dt.UTC)
    return (when - dt.datetime.now(dt.UTC)).total_seconds()


def platform_message(response: requests.Response) -> str:
    """The platform's explanation of an error response (its JSON title/detail/message), shortened."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason
    if isinstance(body, Mapping):
        parts = [str(body[k]) for k in ("error_code", "code", "error", "title", "detail", "message",
                                        "error_description") if body.get(k)]
        if parts:
            return ": ".join(dict.fromkeys(parts))[:500]
    return str(body)[:500]


class Client:
    """Authenticated, retrying calls to the platform. Thread-safe: uploads share one client."""

    def __init__(self, cfg: AepConfig, secret: Secret, retry: Retry | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        missing = [k for k in ("org_id", "client_id") if not getattr(cfg, k)]
        if missing:
            raise ConfigError(f"set {', '.join('aep.' + k for k in missing)} (Developer Console project "
                              "credentials)")
        self.cfg = cfg
        self.ims = check_url(cfg.ims_url, "aep.ims_url")
        self.platform = check_url(cfg.platform_url, "aep.platform_url")
        self.retry = retry or Retry.of(cfg)
        self._secret = secret
        self._sleep = sleep
        self._token: Secret | None = None
        self._expires = dt.datetime.min.replace(tzinfo=dt.UTC)
        self._token_lock = threading.Lock()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()  # not the token lock: fetching a token opens a session
        self.tokens_issued = 0

    # -- token ---------------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers["User-Agent"] = "profile-enrichment"
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        """Close every thread's connection pool."""
        with self._sessions_lock:
            sessions, self._sessions = self._sessions, []
            self._local = threading.local()
        for session in sessions:
            session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def token(self, stale: Secret | None = None) -> Secret:
        """A valid access token; a new one when it is near expiry or equals `stale` (it got a 401)."""
        with self._token_lock:
            now = dt.datetime.now(dt.UTC)
            if self._token is None or self._token is stale or now >= self._expires - REFRESH_MARGIN:
                self._token, self._expires = self._fetch_token()
            return self._token

    def _fetch_token(self) -> tuple[Secret, dt.datetime]:
        form = {"grant_type": "client_credentials", "client_id": self.cfg.client_id,
                "client_secret": self._secret.value, "scope": ",".join(self.cfg.scopes)}
        response = self._send("POST", f"{self.ims}/ims/token/v3", auth=False, data=lambda: form,
                              what="token request")
        try:
            body = response.json()
            token, seconds = body["access_token"], float(body.get("expires_in", 86400))
        except (ValueError, KeyError, TypeError):
            raise PlatformError(f"token request: IMS answered {response.status_code} without an access token") from None
        # IMS v3 gives seconds; older endpoints gave milliseconds. Anything above ~10 days is ms.
        if seconds > 864_000:
            seconds /= 1000.0
        self.tokens_issued += 1
        log.info("access token obtained (valid %.1f h)", seconds / 3600)
        return Secret(token), dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)

    # -- requests ------------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """The platform URL of a path; an absolute URL (a listing's link) only on the platform's own
        scheme and host, since the request carries the token."""
        if not path.startswith(("http://", "https://")):
            return f"{self.platform}{path}"
        given, own = urlsplit(path), urlsplit(self.platform)
        if (given.scheme, given.netloc) != (own.scheme, own.netloc):
            raise PlatformError(f"refusing to send credentials to {given.scheme}://{given.netloc} (a link the "
                                f"platform returned); only {own.scheme}://{own.netloc} is trusted")
        return path

    def headers(self, token: Secret, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token.value}", "x-api-key": str(self.cfg.client_id),
                   "x-gw-ims-org-id": str(self.cfg.org_id), "x-sandbox-name": self.cfg.sandbox}
        headers.update(extra or {})
        return headers

    def call(self, method: str, path: str, *, what: str, json: Any = None, data: Callable[[], Any] | None = None,
             headers: Mapping[str, str] | None = None, params: Mapping[str, Any] | None = None,
             ok: Iterable[int] = (200, 201, 202, 204, 206), stream: bool = False,
             idempotent: bool = True) -> requests.Response:
        """One platform call with the auth headers, retried as the module doc says.

        `data` is a factory (a fresh file object or bytes per try, so a retried upload resends it
        whole); `what` names the call in errors and logs ("upload part-00001.parquet"). A call that
        is not `idempotent` (creating an object) is retried only when it certainly did nothing: an
        error status, or no connection made; when the request may have been carried out and the
        answer was lost, `OutcomeUnknown` is raised so that the caller can look before retrying.
        """
        return self._send(method, self.url(path), auth=True, what=what, json=json, data=data, headers=headers,
                          params=params, ok=frozenset(ok), stream=stream, idempotent=idempotent)

    def _send(self, method: str, url: str, *, auth: bool, what: str, json: Any = None,
              data: Callable[[], Any] | None = None, headers: Mapping[str, str] | None = None,
              params: Mapping[str, Any] | None = None, ok: frozenset[int] = frozenset({200, 201}),
              stream: bool = False, idempotent: bool = True) -> requests.Response:
        started = time.monotonic()
        attempt, refreshed = 0, False
        while True:
            attempt += 1
            token = self.token() if auth else None
            body = data() if data is not None else None
            wait: float | None = None
            try:
                response = self._session().request(
                    method, url, json=json, data=body, params=params, stream=stream,
                    headers=self.headers(token, headers) if token else dict(headers or {}),
                    timeout=self.retry.timeout)
                if response.status_code in ok:
                    return response
                if response.status_code == 401 and auth and not refreshed:
                    refreshed = True
                    response.close()
                    log.info("%s: 401, asking for a new token once", what)
                    self.token(stale=token)
                    attempt -= 1
                    continue
                if response.status_code not in RETRY_STATUS:
                    raise PlatformError(f"{what}: {method} {_shown(url)} -> {response.status_code} "
                                        f"{platform_message(response)}", response.status_code)
                problem = f"{response.status_code} {platform_message(response)}"
                wait = retry_after(response)
                response.close()
            except requests.exceptions.SSLError as exc:
                raise PlatformError(f"{what}: TLS verification failed for {_shown(url)}: {_reason(exc)}") from None
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                problem = f"{type(exc).__name__}"
                if not idempotent and not _not_sent(exc):
                    raise OutcomeUnknown(f"{what}: {method} {_shown(url)}: {problem} after the request was "
                                         "sent; it may have been carried out") from None
            finally:
                if hasattr(body, "close"):
                    body.close()
            elapsed = time.monotonic() - started
            delay = self.retry.delay(attempt, wait)
            if attempt >= self.retry.attempts or elapsed + delay > self.retry.total:
                raise PlatformError(f"{what}: {method} {_shown(url)} still failing after {attempt} tries in "
                                    f"{elapsed:.0f}s (aep.max_attempts={self.retry.attempts}, "
                                    f"aep.max_retry_seconds={self.retry.total:g}); last: {problem}")
            log.warning("%s: %s; try %d of %d in %.1fs", what, problem, attempt + 1, self.retry.attempts, delay)
            self._sleep(delay)

    def pause(self, attempt: int, why: str) -> None:
        """Back off before retry `attempt + 1` of something longer than one request (a download)."""
        delay = self.retry.delay(attempt, None)
        log.warning("%s in %.1fs", why, delay)
        self._sleep(delay)

    def json(self, method: str, path: str, *, what: str, **kwargs: Any) -> Any:
        response = self.call(method, path, what=what, **kwargs)
        if response.status_code == 204 or not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            raise PlatformError(f"{what}: {method} {_shown(self.url(path))} answered {response.status_code} "
                                f"with a body that is not JSON") from None


def _not_sent(exc: Exception) -> bool:
    """The connection was never made (refused, or timed out connecting): nothing reached the server."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    return isinstance(getattr(reason, "reason", reason), urllib3.exceptions.NewConnectionError)


def _reason(exc: Exception) -> str:
    return str(exc.args[0] if exc.args else exc)[:300]


def _shown(url: str) -> str:
    """The URL without its query string (it may hold file names; never credentials, but keep it short)."""
    return url.split("?", 1)[0]
