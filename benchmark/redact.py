"""Hide credentials before a URL reaches a log, a param, a tag or an error message."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

# scheme://user:password@host -> scheme://user:***@host. The password runs to the *last* '@'
# that is followed by a host, so an unescaped '@' inside it is still hidden.
_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>\S*)@"
    r"(?=[^@/\s]*(?:[/?#]|$))"
)
_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|pwd|token|secret|key)=)([^&\s]*)")


def mask_uri(uri: str | None) -> str | None:
    """``postgresql://u:secret@h/db?password=x`` -> ``postgresql://u:***@h/db?password=***``."""
    if uri is None:
        return None
    masked = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", uri)
    return _QUERY_SECRET.sub(r"\1***", masked)


def _written_secrets(uri: str) -> list[str]:
    found = [m["password"] for m in _USERINFO.finditer(uri)]
    return found + [m[2] for m in _QUERY_SECRET.finditer(uri)]


def secrets_of(uri: str | None) -> list[str]:
    """The passwords and tokens written in ``uri`` (as written and URL-decoded)."""
    if not uri:
        return []
    found = _written_secrets(uri)
    out = {s for s in found if s and s != "***"} | {unquote(s) for s in found if s and s != "***"}
    return sorted(out, key=len, reverse=True)  # longest first: no partial replacement


def unmasked(uri: str, source: Path, key: str, advice: str) -> str:
    """``uri``, read from ``key`` of the file ``source``; a ValueError naming both (and
    ``advice``: how to give the URL) if :func:`mask_uri` hid its password there, as it does
    in every config.yaml written beside a result."""
    if "***" in _written_secrets(uri):
        raise ValueError(f"{source}: {key} {uri} has its password masked; {advice}")
    return uri


def scrub(text: str, *uris: str | None) -> str:
    """``text`` with every URL in it masked and the secrets of ``uris`` removed wherever they
    appear: a driver's error message may quote a password without its URL."""
    out = mask_uri(text)
    for uri in uris:
        for secret in secrets_of(uri):
            out = out.replace(secret, "***")
    return out


def mask_config(config: Any) -> Any:
    """A copy of a (nested) dataclass config with every text field passed through
    :func:`mask_uri`: what may be written beside a result or logged (the config in use keeps
    its credentials)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        changes = {
            f.name: mask_config(getattr(config, f.name))
            for f in dataclasses.fields(config)
            if f.init
        }
        return dataclasses.replace(config, **changes)
    if isinstance(config, str):
        return mask_uri(config)
    if isinstance(config, list):
        return [mask_config(v) for v in config]
    return config
