"""The one jinja2 Environment of the agent, and the filters templates may use.

StrictUndefined: a typo in a template is an error, never an empty string.
Rule text that needs logic (lists, quoting) is built by the Python filters
below, so templates stay declarative. Filters are a second line of defence:
values were validated by verify(), and the filters refuse anything that could
still break out of its line or field.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

import jinja2

TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "templates")

_FILTERS: dict[str, Callable[..., Any]] = {}
# Characters a value may contain in a dnsmasq directive or an nft token.
_SAFE = re.compile(r"^[A-Za-z0-9_.:/@-]*$")


class TemplateValueError(ValueError):
    pass


def _filter(func: Callable[..., Any]) -> Callable[..., Any]:
    _FILTERS[func.__name__] = func
    return func


@_filter
def safe_token(value: object) -> str:
    """A value that goes into a config file verbatim: no spaces, commas, quotes, newlines."""
    text = str(value)
    if not _SAFE.fullmatch(text):
        raise TemplateValueError(f"unsafe value in template: {text!r}")
    return text


@_filter
def nft_quote(value: object) -> str:
    """An nft string literal (interface names)."""
    return f'"{safe_token(value)}"'


@_filter
def nft_set(values: Iterable[object], quote: bool = False) -> str:
    """`{ a, b }` for an anonymous set or a set's elements."""
    items = [nft_quote(v) if quote else safe_token(v) for v in values]
    return "{ " + ", ".join(items) + " }"


@_filter
def netmask(cidr: str) -> str:
    return str(ipaddress.IPv4Network(cidr).netmask)


@_filter
def network_address(cidr: str) -> str:
    return str(ipaddress.IPv4Network(cidr).network_address)


@_filter
def comma_list(values: Iterable[object]) -> str:
    return ",".join(safe_token(v) for v in values)


@functools.cache
def environment() -> jinja2.Environment:
    # The router image compiles every template at build time into this cache
    # (images/router/build.sh): compiling them is a second of a router VM's
    # first apply under TCG. Entries are keyed by the template's source, so a
    # stale one is never used.
    cache_dir = os.environ.get("CLOUDNET_TEMPLATE_CACHE", "")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        bytecode_cache=jinja2.FileSystemBytecodeCache(cache_dir)
        if cache_dir and os.path.isdir(cache_dir) else None,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters.update(_FILTERS)
    return env


def render(template: str, generator: str, **context: Any) -> str:
    """Render `template` (e.g. "nftables/cloudnet.nft.j2") to a string.

    `generator` names the module that owns the output; templates print it in
    their header so a reader of the file knows where it comes from.
    """
    return environment().get_template(template).render(generator=generator, **context)
