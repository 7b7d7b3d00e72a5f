"""The agent's error types: what was wrong with a config vs what failed to apply."""

from __future__ import annotations

from common.grpc_errors import MAX_MESSAGE, clip, one_line


class ConfigError(Exception):
    """A config is invalid; the message names the offending object.

    `kind`/`object_id` (e.g. "port", "<port id>") let the status report point
    at the API object, so netmgr can show the error on it rather than in a log.
    """

    def __init__(self, message: str, kind: str = "", object_id: str = "") -> None:
        # Shown in the router's status and netmgr's objects: one short line,
        # whatever value it quotes.
        super().__init__(clip(one_line(message), MAX_MESSAGE))
        self.kind = kind
        self.object_id = object_id


class CheckError(ConfigError):
    """A daemon's own validator (nft -c, dnsmasq --test) refused the rendered config."""


class ApplyError(Exception):
    """Applying a valid config failed (netlink, a daemon did not start...)."""


class StaleDelta(Exception):
    """An edge delta cannot be applied in place: the caller pushes the whole config.

    ``table_changed``: the loaded table may differ from the last full
    rendering, so the next full apply must load it again.
    """

    def __init__(self, message: str, table_changed: bool = False) -> None:
        super().__init__(message)
        self.table_changed = table_changed


class RequestError(Exception):
    """A request to the agent is malformed (not a config problem)."""


class RouterNotFound(Exception):
    """The router named by a request is not on this agent."""


class FencedPush(Exception):
    """A push from a netmgr replica whose lease epoch is older than one the
    router has seen, or of a generation older than the router runs: applying
    it would roll the router back."""


class ObjectNotFound(RouterNotFound):
    """The object a request names is not in the router's running config."""
