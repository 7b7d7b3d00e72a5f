"""HAProxy's refusal names the load balancer: by the line it points at (the
section holding it) or by the proxy it names; the reason is HAProxy's own,
with the config text it quotes (the output below is haproxy -c 2.6's)."""

from __future__ import annotations

from router.services import haproxy

CONF = """global
\tmaxconn 10

frontend fe-lb1
\tbind 203.0.113.20:80
\tdefault_backend be-lb1

backend be-lb1
\tmode http
\toption httpchk GET /a'b
"""

OUTPUT = """[NOTICE]   (14897) : haproxy version is 2.6.12-1+deb12u4
[ALERT]    (14897) : config : parsing [/x/.c.cfg:10]: unmatched quote at position 23:
  option httpchk GET /a'b
                       ^
[ALERT]    (14897) : config : Error(s) found in configuration file : /x/.c.cfg
[ALERT]    (14897) : config : Fatal errors found in configuration.
"""


def test_the_line_an_alert_points_at_names_the_load_balancer() -> None:
    e = haproxy.refusal(OUTPUT, CONF, "/x/.c.cfg")
    assert (e.kind, e.object_id) == ("loadbalancer", "lb1")
    assert str(e) == ("load balancer 'lb1' refused by haproxy -c: parsing [haproxy.cfg:10]: "
                      "unmatched quote at position 23: option httpchk GET /a'b")


def test_a_named_proxy_names_the_load_balancer() -> None:
    out = "[ALERT]    (1) : config : backend 'be-lb7': no server available\n"
    e = haproxy.refusal(out, CONF, "/x.cfg")
    assert (e.kind, e.object_id) == ("loadbalancer", "lb7")


def test_an_alert_outside_every_load_balancer_names_none() -> None:
    out = "[ALERT]    (1) : config : parsing [/x.cfg:2]: unknown keyword 'maxconn'\n"
    e = haproxy.refusal(out, CONF, "/x.cfg")
    assert (e.kind, e.object_id) == ("", "")
    assert "unknown keyword" in str(e)
    assert "/x.cfg" not in str(e)
