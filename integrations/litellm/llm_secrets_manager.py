"""
LLMSecretsManager: a LiteLLM custom secret manager that keeps a proxy's secrets in llm-secrets.

LiteLLM loads it from its config (``key_management_system: custom``,
``key_management_settings.custom_secret_manager: llm_secrets_manager.LLMSecretsManager``, this
file beside config.yaml) and constructs it with no arguments. It is configured from the
environment:

    LLM_SECRETS_URL          the llm-secrets API, e.g. https://secrets.internal:4000 (required)
    LLM_SECRETS_API_KEY      its master key, sent as x-litellm-api-key (required)
    LLM_SECRETS_CA_BUNDLE    a PEM bundle of CAs to trust (default: httpx's, certifi's bundle;
                             with a client certificate and no bundle, the system's CAs)
    LLM_SECRETS_CLIENT_CERT  a client certificate (PEM) for mutual TLS, with
    LLM_SECRETS_CLIENT_KEY   its key (PEM, unencrypted: an encrypted one is refused at
                             construction; may be left out when the cert file holds it)
    LLM_SECRETS_TIMEOUT      seconds per network step of a call: to connect, to send, and between
                             two reads of the answer (default 10; httpx's timeout, not a total)
    LLM_SECRETS_FUNCTIONS_KEY  an Azure Functions key, sent as x-functions-key (infra/azure's
                             function-key auth). A deployment behind IAM (infra/aws's Function URL,
                             infra/gcp's invoker) needs its own signed requests: this class does
                             not sign them

Reads go through ``GET /v1/secrets/{name}`` (so through llm-secrets' cache); a name the store
does not hold is ``None``, never an exception. Writes and deletes (LiteLLM's virtual-key hooks
with ``store_virtual_keys: true``) go through ``PUT`` and ``DELETE``; a delete that fails answers
``{"status": "error", ...}`` rather than raise, and logs a warning on the ``LiteLLM`` logger, as
LiteLLM's Vault manager does, since LiteLLM deletes a key's names in one loop that a raise would
end (and it ignores what the delete answers). A team's ``secret_manager_settings``
(``optional_params``) are not sent, and no team is named: what this class writes is placed by
llm-secrets' general ``key_management_settings`` (its ``team_settings`` place the keys of its
queue's key events). A team's ``prefix_for_stored_virtual_keys`` still counts: a name under a
team's prefix nested in the general one (``litellm/team-a/prod`` with team-a's ``litellm/team-a/``)
is that team's, refused (403 not_hosted) with ``hosted_keys`` set, and never taking over a secret
made outside llm-secrets without. Names are encoded one path segment at a time, so
``litellm/team/key`` reaches the secret of that name. A call that meets 503 is sent once more
after its Retry-After (at most ``RETRY_AFTER_MAX_S``; a sync read waits in its thread, as
LiteLLM's reads of provider keys at start-up are sync). Every other failure of a read or write is
an ``LLMSecretsError`` with the HTTP status and llm-secrets' error code; no error holds a value or
the API key. The health check asks ``/ready``, then reads a name with the API key: a wrong key is unhealthy.

A key's write (``<prefix><key_alias>``, or ``<prefix>virtual-key-<sha256 of the key>`` without an
alias) can be refused: 409 name_conflict (the name lands on a secret made outside llm-secrets, or
on a hosted name's), 403 not_hosted (with ``hosted_keys``, a name under another team's prefix),
400 invalid_name (an alias that is no name, e.g. with a space), 400 invalid_request (an alias
spelled as a token hash's name, ``virtual-key-<64 hex>`` in any case with any separator, whose
value is not that key: refused here before sending, status 0, and by the server), or 503 with a
Retry-After above 5 s. LiteLLM then keeps the key, unstored in llm-secrets: its hook logs one
WARNING on the ``LiteLLM Proxy`` logger, and nothing retries. The remedy: regenerate the key
with an allowed ``key_alias``, or (a 403) an operator adds the name to ``hosted_keys``. A delete
of a name spelled as a token hash's is never sent (LiteLLM deletes only keys with an alias). A
regeneration to a new name sends the old name as ``replaces`` (a rename where the store keeps both
names on one secret: Azure's ``team_a`` and ``team-a``; a server of this version or later, an older
one refuses the field and gets the write again without it), then deletes the old name whatever
became of the write (after a rename, 409 name_conflict, logged at INFO), unless the old name is
spelled as a token hash's (an alias-less key given an alias): that name is left, orphaned, as
LiteLLM leaves an alias-less key's on delete, since its owner cannot be told. A key without an
alias regenerated under its old hash's name (LiteLLM asks for ``virtual-key-<old hash>``, holding
the new key) is written under ``virtual-key-<sha256 of the new key>`` instead, the name LiteLLM
gives that key and asks for at its next regeneration; the old hash's name is left orphaned too
(it cannot be told from an alias spoofing another key's hash name, whose secret a write or delete
there would replace). One INFO line on the ``LiteLLM`` logger says so, with names only.

Standard library and httpx (which LiteLLM already depends on) only. One pooled client per
process: the sync client is shared by every instance, the async one by every instance on an
event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import re
import ssl
import threading
import time
import weakref
from typing import Any, Dict, Optional, Union
from urllib.parse import quote, urlsplit

import httpx
from litellm.integrations.custom_secret_manager import CustomSecretManager

DEFAULT_TIMEOUT_S = 10.0
# A call that meets 503 (the store unavailable: it always says Retry-After) is sent once
# more after that wait, when the wait is at most this; LiteLLM itself never retries a write.
RETRY_AFTER_MAX_S = 5.0
# The health check's read with the API key: a name no one stores.
HEALTH_CHECK_NAME = "llm-secrets-health-check"
# A token hash's secret name at a name's end (its last segment, or its last three: virtual/key/<hex>):
# LiteLLM stores a key without an alias as <prefix>virtual-key-<sha256 of the key>. Any case, and any
# other character for either "-", as stores that map names (Azure, Google) land those on that secret.
HASH_NAME = re.compile(r"(?:^|/)virtual[^0-9a-z]key[^0-9a-z]([0-9a-f]{64})\Z", re.IGNORECASE | re.ASCII)

# LiteLLM's own logger (litellm._logging's verbose_logger): where its secret managers log failures.
logger = logging.getLogger("LiteLLM")

# What a delete of a rotation's old name answers when that name never held a key of ours: the
# server's refusals, and this class's own of a name that is no name, before sending (status 0).
# After a rename (the write took the old name's secret over: ``replaces``), its delete is the 409.
NEVER_OURS = {(409, "name_conflict"), (403, "not_hosted"), (400, "invalid_name"), (0, "invalid_name")}
# What a rotation's write with ``replaces`` answers when the server refuses that field (an old name this
# caller may not write, or that is no name; an older server, which does not know it: 400): the write
# is sent again without it, as before. A refusal of the new name itself answers the same again.
REPLACES_REFUSED = {400, 403, 409}


class LLMSecretsError(Exception):
    """A call to llm-secrets failed: the status (0 when no answer came), the error code, a message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"llm-secrets answered {status} {code}: {message}" if status else f"llm-secrets: {message}")
        self.status = status
        self.code = code


class _Settings:
    def __init__(self) -> None:
        url = os.environ.get("LLM_SECRETS_URL", "").strip()
        key = os.environ.get("LLM_SECRETS_API_KEY", "").strip()
        missing = [n for n, v in (("LLM_SECRETS_URL", url), ("LLM_SECRETS_API_KEY", key)) if not v]
        if missing:
            raise ValueError(f"LLMSecretsManager needs {' and '.join(missing)} in the environment")
        if not url.startswith(("https://", "http://")):
            raise ValueError("LLM_SECRETS_URL must start with https:// (or http:// on a trusted network)")
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (a port that is no number, or out of range, raises here)
        except ValueError:
            raise ValueError("LLM_SECRETS_URL is not a URL (a host, then an optional port from 0 to 65535)") from None
        if not parts.hostname:
            raise ValueError("LLM_SECRETS_URL has no host")
        self.url = url.rstrip("/")
        # A header value: printable ASCII only. Refused without echoing it (httpx would quote it
        # in its error, and LiteLLM logs the error).
        if not all("\x21" <= ch <= "\x7e" for ch in key):
            raise ValueError("LLM_SECRETS_API_KEY must be printable ASCII without spaces (its value is not shown)")
        self.api_key = key
        functions_key = os.environ.get("LLM_SECRETS_FUNCTIONS_KEY", "").strip()
        if functions_key and not all("\x21" <= ch <= "\x7e" for ch in functions_key):
            raise ValueError("LLM_SECRETS_FUNCTIONS_KEY must be printable ASCII without spaces (its value is not shown)")
        self.functions_key = functions_key
        ca = os.environ.get("LLM_SECRETS_CA_BUNDLE", "").strip()
        cert = os.environ.get("LLM_SECRETS_CLIENT_CERT", "").strip()
        key_file = os.environ.get("LLM_SECRETS_CLIENT_KEY", "").strip()
        # The files, for telling settings apart; the TLS context itself is made once (an
        # ssl.SSLContext: httpx deprecates paths in `verify` and `cert` from 0.28).
        self.tls_files = (ca, cert, key_file)
        self.verify: Union[bool, ssl.SSLContext] = True
        if key_file and not cert:
            raise ValueError("LLM_SECRETS_CLIENT_KEY needs LLM_SECRETS_CLIENT_CERT (the certificate it is the key of)")
        if ca or cert:
            try:
                context = ssl.create_default_context(cafile=ca or None)
                if cert:
                    # A password callback, so an encrypted key is refused by name rather than
                    # OpenSSL asking on the terminal (the proxy's start waits there) or failing
                    # with a bare OSError.
                    context.load_cert_chain(cert, key_file or None, password=_encrypted_client_key)
            except (OSError, ssl.SSLError) as err:
                raise ValueError(f"LLMSecretsManager cannot use its TLS files: {type(err).__name__}: {err}") from None
            self.verify = context
        raw_timeout = os.environ.get("LLM_SECRETS_TIMEOUT", "").strip()
        try:
            self.timeout = float(raw_timeout) if raw_timeout else DEFAULT_TIMEOUT_S
        except ValueError:
            raise ValueError("LLM_SECRETS_TIMEOUT must be a number of seconds") from None
        if not math.isfinite(self.timeout) or self.timeout <= 0:
            raise ValueError("LLM_SECRETS_TIMEOUT must be a number of seconds above 0") from None

    def identity(self) -> tuple:
        # The key's hash, not the key: clients are shared per settings, the key's header included.
        keys = f"{self.api_key}\n{self.functions_key}"
        return (self.url, self.tls_files, self.timeout, hashlib.sha256(keys.encode()).hexdigest())

    def client_options(self) -> Dict[str, Any]:
        return {
            "base_url": self.url,
            "verify": self.verify,
            "timeout": httpx.Timeout(self.timeout),
            "headers": {
                "x-litellm-api-key": self.api_key,
                "user-agent": "llm-secrets-litellm/1",
                **({"x-functions-key": self.functions_key} if self.functions_key else {}),
            },
            "limits": httpx.Limits(max_connections=100, max_keepalive_connections=20),
        }


def _encrypted_client_key() -> bytes:
    """Called by OpenSSL only for an encrypted key: no passphrase is read, so it is refused."""
    raise ValueError(
        "the client key is encrypted; LLMSecretsManager takes an unencrypted PEM key in LLM_SECRETS_CLIENT_KEY "
        "(or in LLM_SECRETS_CLIENT_CERT's file): decrypt it, e.g. openssl pkey -in encrypted.key -out client.key"
    )


_lock = threading.Lock()
_sync_clients: Dict[tuple, httpx.Client] = {}
_async_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Dict[tuple, httpx.AsyncClient]]" = (
    weakref.WeakKeyDictionary()
)


def _path(name: str) -> str:
    if not isinstance(name, str) or name == "":
        raise LLMSecretsError(0, "invalid_name", "a secret name is a non-empty string")
    segments = name.split("/")
    # httpx (as any URL library) removes "." and ".." segments before sending, so the server would
    # see the name they point at: a key alias of "x/../../OPENAI_API_KEY" would overwrite a provider
    # key. Refused here, as the server refuses them on the wire; an empty segment too.
    if any(segment in ("", ".", "..") for segment in segments):
        raise LLMSecretsError(0, "invalid_name", "a secret name has no empty, '.' or '..' path segment")
    return "/v1/secrets/" + "/".join(quote(segment, safe="") for segment in segments)


def _timeout(timeout: Any) -> Any:
    if timeout is None:
        return httpx.USE_CLIENT_DEFAULT
    return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(float(timeout))


def _failure(response: httpx.Response) -> LLMSecretsError:
    code, message = "http_error", response.reason_phrase or "error"
    try:
        error = response.json().get("error", {})
        code = str(error.get("code", code))
        message = str(error.get("message", message))
    except (ValueError, AttributeError):
        pass  # not llm-secrets' JSON error: the status says enough
    return LLMSecretsError(response.status_code, code, message)


def _unreachable(err: httpx.HTTPError) -> LLMSecretsError:
    if isinstance(err, httpx.TimeoutException):
        return LLMSecretsError(0, "timeout", f"no answer within the timeout ({type(err).__name__})")
    # The type only: an httpx message may quote a header value (the API key).
    return LLMSecretsError(0, "unreachable", f"cannot reach the llm-secrets API ({type(err).__name__})")


def _answer(response: httpx.Response) -> Dict[str, Any]:
    """A success's JSON object; anything else (a proxy's HTML page) is an LLMSecretsError."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise LLMSecretsError(response.status_code, "invalid_answer", "the answer is not llm-secrets' JSON")
    return body


def _retry_wait(response: httpx.Response) -> Optional[float]:
    """The wait before a second try of a 503, or None (not a 503, or a wait longer than allowed)."""
    if response.status_code != 503:
        return None
    try:
        wait = float(response.headers.get("retry-after", "1"))
    except ValueError:
        return None
    return wait if 0 <= wait <= RETRY_AFTER_MAX_S else None


def _write_body(value: str, description: Optional[str], tags: Optional[Union[dict, list]]) -> Dict[str, Any]:
    if not isinstance(value, str) or value == "":
        raise LLMSecretsError(0, "invalid_request", "a secret value is a non-empty string")
    body: Dict[str, Any] = {"value": value}
    if description:
        body["description"] = description
    if isinstance(tags, dict) and tags:
        body["tags"] = {str(k): str(v) for k, v in tags.items()}
    elif isinstance(tags, list) and tags:
        # LiteLLM's list form is AWS's, [{"Key": ..., "Value": ...}]; a bare string is a key alone.
        body["tags"] = {
            str(t["Key"]) if isinstance(t, dict) and "Key" in t else str(t): (
                "" if not isinstance(t, dict) or t.get("Value") is None else str(t["Value"])
            )
            for t in tags
        }
    return body


def _hash_of_name(name: str) -> Optional[str]:
    """The token hash (lower-case hex) that `name` is spelled as the secret name of, or None."""
    match = HASH_NAME.search(name) if isinstance(name, str) else None
    return match.group(1).lower() if match else None


def _replaces(name: Any) -> Optional[str]:
    """
    A rotation's old name as its write's ``replaces``, or None for a name this class never writes
    nor deletes (no name: refused before sending; spelled as a token hash's: its owner cannot be told).
    """
    if _hash_of_name(name) is not None:
        return None
    try:
        _path(name)
    except LLMSecretsError:
        return None
    return name


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _own_hash_name(name: str, value: str) -> str:
    """
    `name` (spelled as a token hash's secret name) with that name replaced by the one LiteLLM gives
    the key `value`: the same prefix, then ``virtual-key-<sha256 of value>``.
    """
    match = HASH_NAME.search(name)
    if match is None:
        return name
    start = match.start() + (1 if name[match.start()] == "/" else 0)
    return f"{name[:start]}virtual-key-{_sha256(value)}"


def _refuse_hash_spoof(name: str, value: str) -> None:
    """
    A write under a token hash's secret name is that key's own (LiteLLM's name for a key without an
    alias) only when the value is the key: else it is an alias spelled as another key's hash name,
    which would replace that key's secret. Refused before it is sent.
    """
    expected = _hash_of_name(name)
    if expected is not None and _sha256(value) != expected:
        raise LLMSecretsError(
            0,
            "invalid_request",
            f"{name} is spelled as a token hash's secret name (virtual-key-<64 hex digits>) and the value is "
            "not that key: it would replace another key's secret (choose another key_alias)",
        )


class LLMSecretsManager(CustomSecretManager):
    """LiteLLM's secret manager, served by llm-secrets over HTTPS."""

    def __init__(self) -> None:
        super().__init__(secret_manager_name="llm_secrets")
        self._settings = _Settings()

    # The pooled clients: one per process (sync) and per event loop (async), per settings.
    def _client(self) -> httpx.Client:
        key = self._settings.identity()
        with _lock:
            client = _sync_clients.get(key)
            if client is None or client.is_closed:
                client = httpx.Client(**self._settings.client_options())
                _sync_clients[key] = client
            return client

    def _async_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        key = self._settings.identity()
        with _lock:
            # A closed loop's clients go (their pooled connections would keep the loop, and a
            # socket each, alive: a script calling asyncio.run again and again).
            for closed in [lp for lp in list(_async_clients.keys()) if lp.is_closed()]:
                del _async_clients[closed]
            clients = _async_clients.setdefault(loop, {})
            client = clients.get(key)
            if client is None or client.is_closed:
                client = httpx.AsyncClient(**self._settings.client_options())
                clients[key] = client
            return client

    async def _async_send(self, method: str, path: str, **options: Any) -> httpx.Response:
        """One async call, sent again once after a 503's Retry-After (reads, writes and deletes are idempotent)."""
        client = self._async_client()
        try:
            response = await client.request(method, path, **options)
            wait = _retry_wait(response)
            if wait is not None:
                await asyncio.sleep(wait)
                response = await client.request(method, path, **options)
        except httpx.HTTPError as err:
            raise _unreachable(err) from None
        return response

    # Reads: a name the store does not hold is None.
    def sync_read_secret(
        self,
        secret_name: str,
        optional_params: Optional[dict] = None,
        timeout: Optional[Union[float, httpx.Timeout]] = None,
    ) -> Optional[str]:
        path, client = _path(secret_name), self._client()
        try:
            response = client.get(path, timeout=_timeout(timeout))
            wait = _retry_wait(response)
            if wait is not None:
                time.sleep(wait)
                response = client.get(path, timeout=_timeout(timeout))
        except httpx.HTTPError as err:
            raise _unreachable(err) from None
        return self._read(response)

    async def async_read_secret(
        self,
        secret_name: str,
        optional_params: Optional[dict] = None,
        timeout: Optional[Union[float, httpx.Timeout]] = None,
    ) -> Optional[str]:
        response = await self._async_send("GET", _path(secret_name), timeout=_timeout(timeout))
        return self._read(response)

    @staticmethod
    def _read(response: httpx.Response) -> Optional[str]:
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise _failure(response)
        value = _answer(response).get("value")
        if not isinstance(value, str):
            raise LLMSecretsError(response.status_code, "invalid_answer", "the answer holds no value")
        return value

    # Writes and deletes (LiteLLM's virtual-key hooks).
    async def async_write_secret(
        self,
        secret_name: str,
        secret_value: str,
        description: Optional[str] = None,
        optional_params: Optional[dict] = None,
        timeout: Optional[Union[float, httpx.Timeout]] = None,
        tags: Optional[Union[dict, list]] = None,
    ) -> Dict[str, Any]:
        return await self._write(secret_name, secret_value, description, tags, timeout)

    async def _write(
        self,
        secret_name: str,
        secret_value: str,
        description: Optional[str],
        tags: Optional[Union[dict, list]],
        timeout: Optional[Union[float, httpx.Timeout]],
        replaces: Optional[str] = None,
    ) -> Dict[str, Any]:
        """
        A PUT. A name spelled as a token hash's is refused unless the value is that key. ``replaces``
        (a rotation's old name) is sent with it; refused (``REPLACES_REFUSED``), the PUT is sent again
        without it, and, refused then as a name conflict (a newer server, in a rolling upgrade), once
        more with it.
        """
        body = _write_body(secret_value, description, tags)
        path = _path(secret_name)
        _refuse_hash_spoof(secret_name, secret_value)
        sent = body if replaces is None else {**body, "replaces": replaces}
        response = await self._async_send("PUT", path, json=sent, timeout=_timeout(timeout))
        if replaces is not None and response.status_code in REPLACES_REFUSED:
            response = await self._async_send("PUT", path, json=body, timeout=_timeout(timeout))
            # During a rolling upgrade of the servers, the first PUT may have met an older one (400
            # for the field) and this one a newer one, which without ``replaces`` cannot see the
            # rename (409 name_conflict): once more with it, rather than delete the old name after
            # a failed write, which would delete the one secret both names are.
            if response.status_code == 409 and _failure(response).code == "name_conflict":
                response = await self._async_send("PUT", path, json=sent, timeout=_timeout(timeout))
        if response.status_code not in (200, 201):
            raise _failure(response)
        return _answer(response)

    async def async_delete_secret(
        self,
        secret_name: str,
        recovery_window_in_days: Optional[int] = 7,
        optional_params: Optional[dict] = None,
        timeout: Optional[Union[float, httpx.Timeout]] = None,
    ) -> dict:
        """
        Deletes; a failure answers ``{"status": "error", ...}`` rather than raise: LiteLLM deletes a
        revoked key's names in one loop with no ``try``, and a raise there would leave the rest. A name
        spelled as a token hash's is refused, not sent: LiteLLM deletes only keys with an alias, so such
        a name is an alias spelling another key's hash name, and the secret there is that key's.
        """
        try:
            if _hash_of_name(secret_name) is not None:
                raise LLMSecretsError(
                    0,
                    "invalid_request",
                    f"{secret_name} is spelled as a token hash's secret name (virtual-key-<64 hex digits>): LiteLLM "
                    "deletes only a key with an alias, so this is an alias spelling another key's name; not sent",
                )
            return await self._delete(secret_name, timeout)
        except LLMSecretsError as err:
            # LiteLLM ignores the answer: without this line a revoked key left stored goes unseen.
            logger.warning("the delete of %s failed (%s), it may still be stored: %s", secret_name, err.code, err)
            return {"name": secret_name, "deleted": False, "status": "error", "code": err.code, "message": str(err)}

    async def _delete(self, secret_name: str, timeout: Optional[Union[float, httpx.Timeout]]) -> dict:
        response = await self._async_send("DELETE", _path(secret_name), timeout=_timeout(timeout))
        if response.status_code != 204:
            raise _failure(response)
        return {"name": secret_name, "deleted": True, "status": "success"}

    async def async_update_secret_value(
        self,
        secret_name: str,
        secret_value: str,
        optional_params: Optional[dict] = None,
        timeout: Optional[Union[float, httpx.Timeout]] = None,
    ) -> Dict[str, Any]:
        return await self.async_write_secret(secret_name, secret_value, optional_params=optional_params, timeout=timeout)

    async def async_rotate_secret(
        self,
        current_secret_name: str,
        new_secret_name: str,
        new_secret_value: str,
        optional_params: Optional[dict] = None,
        timeout: Optional[Union[float, httpx.Timeout]] = None,
    ) -> Dict[str, Any]:
        """
        LiteLLM's key regeneration: the new value under the new name, then the old name deleted when
        it differs. No read: the base class's rotation reads the old secret first and the new one
        back (a virtual key may be writable but not readable here, under hosted_keys), and, when the
        name stays, deletes what it has just written (older LiteLLM) or is not implemented (newer).
        A new name spelled as a token hash's is refused unless the value is that key. When the name
        stays and is spelled as a token hash's that the new value is not (LiteLLM regenerating a key
        without an alias asks for ``virtual-key-<old hash>``), the new key is written under the same
        prefix + ``virtual-key-<sha256 of the new key>``: the name LiteLLM gives that key, and the one
        its next regeneration asks for as the current name. The old hash's name is not deleted: the
        same call comes from a key whose alias spells another key's hash name, and the secret there
        may be that other key's; it stays orphaned, as LiteLLM leaves an alias-less key's on delete.
        When the names differ, the write names the old name as ``replaces``: on a store that keeps
        both names on one secret (Azure folds case and ``_``: ``team_a`` and ``team-a``; Google maps
        ``.`` to ``-``) the write takes that secret over (a rename), where without it the write was
        refused as 409 name_conflict and the old name's delete then deleted the secret, leaving the new
        key stored nowhere. A server that refuses ``replaces`` (an older one, or an old name this
        caller may not change) gets the write again without it. Then the old name is deleted whatever
        the write did (the old key is revoked, and a new name refused must not leave it stored), and
        the write's error is raised; after a rename that delete answers 409 name_conflict (the secret
        holds the new name), logged at INFO by ``_delete_replaced``. An old name spelled as a token
        hash's is neither sent as ``replaces`` nor deleted (see ``_delete_replaced``).
        """
        if new_secret_name == current_secret_name:
            old_hash = _hash_of_name(new_secret_name)
            if old_hash is not None and isinstance(new_secret_value, str) and _sha256(new_secret_value) != old_hash:
                own_name = _own_hash_name(new_secret_name, new_secret_value)
                written = await self._write(own_name, new_secret_value, None, None, timeout)
                logger.info(
                    "the rotation of %s (a token hash's name the new key is not) was written under the new key's "
                    "hash name %s; %s is not deleted (its owner cannot be told): it stays orphaned",
                    current_secret_name,
                    own_name,
                    current_secret_name,
                )
                return written
            return await self._write(new_secret_name, new_secret_value, None, None, timeout)
        try:
            written = await self._write(
                new_secret_name, new_secret_value, None, None, timeout, replaces=_replaces(current_secret_name)
            )
        except Exception:
            await self._delete_replaced(current_secret_name, timeout, write_failed=True)
            raise
        await self._delete_replaced(current_secret_name, timeout, write_failed=False)
        return written

    async def _delete_replaced(
        self, secret_name: str, timeout: Optional[Union[float, httpx.Timeout]], write_failed: bool
    ) -> None:
        """
        A rotation's delete of the old name. 404, 409 name_conflict (the name lands on a secret made
        outside llm-secrets, or on a hosted name's), 403 not_hosted or invalid_name (400 from the
        server, or this class's own refusal before sending, status 0: a name this class could never
        have written, the key's write under it was refused the same way) mean it holds no key of
        ours: logged, not raised. So is the 409 after a rename: the write took the old name's secret
        over (``replaces``), which now holds the new name and key.
        Another failure raises, unless the write failed too: then it is logged and the write's error raised.
        A name spelled as a token hash's is not sent, as in ``async_delete_secret``: LiteLLM asks for one
        when a key without an alias is given one at regeneration, but a key whose alias spells another
        key's hash name asks for the same, and the secret there is then that other key's. Its owner
        cannot be told, so it is left (orphaned, as LiteLLM leaves an alias-less key's on delete) and
        logged at INFO.
        """
        if _hash_of_name(secret_name) is not None:
            logger.info(
                "the rotation's old name %s is spelled as a token hash's name: not deleted (its owner cannot be "
                "told), it stays orphaned",
                secret_name,
            )
            return
        try:
            await self._delete(secret_name, timeout)
        except LLMSecretsError as err:
            if err.status == 404 or (err.status, err.code) in NEVER_OURS:
                logger.info("the rotation's old name %s holds no key of ours (%s): not deleted", secret_name, err.code)
            elif write_failed:
                logger.warning("the delete of %s failed (%s), it may still be stored: %s", secret_name, err.code, err)
            else:
                raise  # the rotation did not finish: the old key may still be stored

    def validate_environment(self) -> bool:
        return True  # the constructor already refused missing or malformed settings

    async def async_health_check(self, timeout: Optional[Union[float, httpx.Timeout]] = None) -> bool:
        """
        Healthy when llm-secrets is ready (its store answers) and takes the API key: a read of a name
        no one stores is answered 404, or 403 when the access mode keeps it from being read; a wrong
        key is 401.
        """
        client = self._async_client()
        try:
            ready = await client.get("/ready", timeout=_timeout(timeout))
            if ready.status_code != 200:
                return False
            read = await client.get(_path(HEALTH_CHECK_NAME), timeout=_timeout(timeout))
        except httpx.HTTPError:
            return False
        return read.status_code in (200, 403, 404)
