"""Keep credentials out of W&B configs, console logs and saved configs."""
from __future__ import annotations

import os
import re
from typing import Any, Iterable, List, Mapping, Optional

MASK = "***"

# scheme://user:password@host -> scheme://user:***@host. Userinfo cannot hold
# '/', '?', '#' or '@' unencoded (RFC 3986), which bounds the password. Also in Hydra's
# escaped form (https\://user\:pw@host), which is how overrides are passed and logged.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*\\?://[^:/?#@\s]*:)(?P<pw>[^/?#@\s]+)@")
# Config keys whose string values are credentials whatever they look like.
_SECRET_KEY = re.compile(r"(api_?key|password|passwd|secret|token|credential)", re.IGNORECASE)
# Environment variables whose values must never be echoed.
_SECRET_ENV = re.compile(r"(API_KEY|PASSWORD|PASSWD|TOKEN|SECRET)", re.IGNORECASE)
# Shorter values would mask ordinary words and numbers all over the log.
_MIN_ENV_SECRET_LEN = 6


def secret_env_values(environ: Optional[Mapping[str, str]] = None) -> List[str]:
    """Values of environment variables named like credentials (longest first)."""
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if _SECRET_ENV.search(k) and len(v) >= _MIN_ENV_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def scrub_text(text: str, extra_secrets: Iterable[str] = ()) -> str:
    """Mask URL passwords and known secret values inside one string."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + "@", text)
    for secret in (*secret_env_values(), *extra_secrets):
        if secret and secret in text:
            text = text.replace(secret, MASK)
    return text


def scrub_secrets(obj: Any, extra_secrets: Iterable[str] = ()) -> Any:
    """Return a copy of obj (dicts, lists, tuples, strings) with secrets masked.

    Masks passwords inside URLs, values of env vars named like ``*API_KEY*``,
    ``*PASSWORD*``, ``*TOKEN*``, ``*SECRET*`` wherever they occur in a string,
    and any string stored under a key named like a credential (``api_key``,
    ``password``, ``token``...). Other values are returned unchanged.
    """
    extra = [s for s in extra_secrets if s]
    env_secrets = secret_env_values()

    def walk(value: Any, key: Optional[str] = None) -> Any:
        if isinstance(value, Mapping):
            return {k: walk(v, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(walk(v) for v in value)
        if isinstance(value, str):
            if key is not None and _SECRET_KEY.search(key) and value:
                return MASK
            return scrub_text(value, (*env_secrets, *extra))
        return value

    return walk(obj)
