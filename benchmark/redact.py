"""Hide credentials before a URL reaches a log, a param, a tag or an error message."""

from __future__ import annotations

import re

# scheme://user:password@host -> scheme://user:***@host. The password runs to the *last* '@'
# that is followed by a host, so an unescaped '@' inside it is still hidden.
_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):\S*@(?=[^@/\s]*(?:[/?#]|$))"
)
_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|pwd|token|secret|key)=)[^&\s]*")


def mask_uri(uri: str | None) -> str | None:
    """``postgresql://u:secret@h/db?password=x`` -> ``postgresql://u:***@h/db?password=***``."""
    if uri is None:
        return None
    masked = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", uri)
    return _QUERY_SECRET.sub(r"\1***", masked)
