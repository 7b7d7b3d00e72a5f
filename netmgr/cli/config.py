"""The CLI's config file: where netmgr is and how to trust it, so a command
needs no flags (the all-in-one writes one).

``$CLOUDNET_CONFIG``, else ``~/.config/cloudnet/config`` (TOML)::

    server = "10.0.0.1:7070,10.0.0.2:7070"   # one address, a list, or a DNS name
    ca_file = "/var/lib/cloudnet/tls/ca.crt"  # the CA that vouches for netmgr
    cert_file = "/var/lib/cloudnet/tls/cli/agent.crt"  # the CLI's certificate for
    key_file = "/var/lib/cloudnet/tls/cli/agent.key"   # compute agents (cloudnet vm)
    token_file = "/var/lib/cloudnet/admin.token"
    policy = "pick_first"                     # or "round_robin"
    insecure = false                          # plaintext (never the default)

Flags win over the environment, which wins over the file.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path

from netmgr.cli.requests import UsageError

DEFAULT_CONFIG = "~/.config/cloudnet/config"
KEYS = {"server": str, "ca_file": str, "token_file": str, "policy": str, "insecure": bool,
        "cert_file": str, "key_file": str}


@dataclasses.dataclass(frozen=True)
class FileSettings:
    server: str | None = None
    ca_file: str | None = None
    token_file: str | None = None
    policy: str | None = None
    insecure: bool = False
    path: str = ""
    cert_file: str | None = None
    key_file: str | None = None


def load(env: dict[str, str]) -> FileSettings:
    named = env.get("CLOUDNET_CONFIG")
    path = Path(named or DEFAULT_CONFIG).expanduser()
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if named:
            raise UsageError(f"config file {path} (CLOUDNET_CONFIG) does not exist") from None
        return FileSettings()
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"config file {path}: {e}") from None
    for key, value in data.items():
        if key not in KEYS:
            raise UsageError(f"config file {path}: unknown setting {key[:40]!r} "
                             f"(known: {', '.join(KEYS)})")
        if not isinstance(value, KEYS[key]):
            raise UsageError(f"config file {path}: {key} must be a {KEYS[key].__name__}")
    base = path.parent

    def relative(value: str | None) -> str | None:
        # Files named relative to the config's own directory.
        return str(base / value) if value and not os.path.isabs(value) else value

    return FileSettings(server=data.get("server"), ca_file=relative(data.get("ca_file")),
                        token_file=relative(data.get("token_file")),
                        policy=data.get("policy"), insecure=bool(data.get("insecure", False)),
                        path=str(path), cert_file=relative(data.get("cert_file")),
                        key_file=relative(data.get("key_file")))
