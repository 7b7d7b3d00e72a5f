"""Guest metadata through the API: SSH key pairs (keys made by ssh-keygen,
fingerprints compared with ssh-keygen's), user data, labels and a key pair on
ports, password resets; bad input named by field and nothing created."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from cloudnet.netmgr.v1 import keypair_pb2 as kpb
from cloudnet.netmgr.v1 import netmgr_pb2 as pb
from google.protobuf.field_mask_pb2 import FieldMask

from netmgr.api.passwords import generate_password
from tests.lib.netmgr_cloud import TABLES, Api, Cloud, bad_fields, rpc_error

Code = grpc.StatusCode


def ssh_keygen(tmp_path: Path, kind: str, bits: int = 0) -> tuple[str, str]:
    """(public key line, ssh-keygen's SHA256 fingerprint) of a fresh key."""
    key = tmp_path / f"id_{kind}_{bits}"
    argv = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "user@host", "-f", str(key)]
    if bits:
        argv[4:4] = ["-b", str(bits)]
    subprocess.run(argv, check=True)
    fp = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", f"{key}.pub"], check=True,
                        capture_output=True, text=True).stdout.split()[1]
    return Path(f"{key}.pub").read_text().strip(), fp


def import_key(api: Api, name: str, public_key: str) -> kpb.KeyPair:
    return api.ImportKeyPair(kpb.ImportKeyPairRequest(
        key_pair=kpb.KeyPair(name=name, public_key=public_key)))


def network_and_port(api: Api, **kw: Any) -> tuple[pb.Network, pb.Port]:
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="web",
                                                                       cidr="10.0.0.0/24")))
    port = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id, name="vm1", **kw)))
    return net, port


@pytest.mark.parametrize(("kind", "bits"), [("ed25519", 0), ("rsa", 2048), ("rsa", 3072),
                                            ("ecdsa", 256), ("ecdsa", 384), ("ecdsa", 521)])
def test_import_keys_of_every_allowed_type_with_ssh_keygens_fingerprint(
    acme: tuple[pb.Tenant, Api], tmp_path: Path, kind: str, bits: int
) -> None:
    tenant, api = acme
    line, fingerprint = ssh_keygen(tmp_path, kind, bits)
    kp = import_key(api, f"k-{kind}", line + "\n")  # as read from the .pub file
    assert (kp.tenant_id, kp.name, kp.fingerprint) == (tenant.id, f"k-{kind}", fingerprint)
    assert kp.public_key == " ".join(line.split()[:2])  # the comment left out
    assert kp.key_type == line.split()[0]
    assert api.GetKeyPair(kpb.GetKeyPairRequest(id=kp.id)) == kp
    assert [k.id for k in api.ListKeyPairs(kpb.ListKeyPairsRequest()).key_pairs] == [kp.id]


def test_bad_keys_are_refused_naming_the_field_and_nothing_is_created(
    cloud: Cloud, acme: tuple[pb.Tenant, Api], tmp_path: Path
) -> None:
    _, api = acme
    short_rsa, _ = ssh_keygen(tmp_path, "rsa", 1024)
    good, _ = ssh_keygen(tmp_path, "ed25519")
    kind, data = good.split()[:2]
    bad = {
        "short rsa": short_rsa,
        "not openssh": "-----BEGIN PUBLIC KEY----- MIIBIjANBgkq",
        "unknown type": f"ssh-dss {data}",
        "type mismatch": f"ssh-rsa {data}",
        "not base64": f"{kind} !!!!",
        "truncated": f"{kind} {data[:-12]}",
        "newline": f"{good}\nssh-ed25519 {data}",
        "empty": "",
    }
    for what, key in bad.items():
        err = rpc_error(lambda key=key: import_key(api, "k1", key))
        assert err.code() == Code.INVALID_ARGUMENT, what
        assert bad_fields(err) == ["key_pair.public_key"], what
    err = rpc_error(lambda: import_key(api, "bad name!", good))
    assert bad_fields(err) == ["key_pair.name"]
    assert cloud.row_counts()["ssh_key_pairs"] == 0
    import_key(api, "k1", good)
    assert rpc_error(lambda: import_key(api, "k1", good)).code() == Code.ALREADY_EXISTS


def test_another_tenants_key_pair_is_not_found_and_cannot_be_used(
    cloud: Cloud, acme: tuple[pb.Tenant, Api], tmp_path: Path
) -> None:
    _, api = acme
    _, other = cloud.new_tenant("other")
    kp = import_key(other, "theirs", ssh_keygen(tmp_path, "ed25519")[0])
    assert rpc_error(lambda: api.GetKeyPair(kpb.GetKeyPairRequest(id=kp.id))).code() == \
        Code.NOT_FOUND
    err = rpc_error(lambda: network_and_port(api, ssh_key_pair_id=kp.id))
    assert err.code() == Code.NOT_FOUND
    assert cloud.row_counts()["ports"] == 0


def test_port_carries_user_data_labels_and_a_key_pair(
    cloud: Cloud, acme: tuple[pb.Tenant, Api], tmp_path: Path
) -> None:
    _, api = acme
    kp = import_key(api, "mine", ssh_keygen(tmp_path, "ed25519")[0])
    script = b"#!/bin/sh\necho hello > /tmp/marker\n"
    net, port = network_and_port(api, user_data=script, labels={"role": "web", "env": "prod-1"},
                                 ssh_key_pair_id=kp.id)
    assert (port.user_data, dict(port.labels), port.ssh_key_pair_id) == (
        script, {"role": "web", "env": "prod-1"}, kp.id)
    assert api.GetPort(pb.GetPortRequest(id=port.id)) == port
    listed = api.ListPorts(pb.ListPortsRequest()).ports[0]
    assert (listed.user_data, dict(listed.labels)) == (b"", dict(port.labels))

    # A key pair in use cannot go.
    assert rpc_error(lambda: api.DeleteKeyPair(kpb.DeleteKeyPairRequest(id=kp.id))).code() == \
        Code.FAILED_PRECONDITION
    before = api.GetRouter(pb.GetRouterRequest(id=net.router_id)).desired_generation
    updated = api.UpdatePort(pb.UpdatePortRequest(
        port=pb.Port(id=port.id, user_data=b"#cloud-config\n", ssh_key_pair_id=""),
        update_mask=FieldMask(paths=["user_data", "ssh_key_pair_id", "labels"])))
    assert (updated.user_data, updated.ssh_key_pair_id, dict(updated.labels)) == (
        b"#cloud-config\n", "", {})
    # The router serves the change: a new generation.
    assert api.GetRouter(pb.GetRouterRequest(id=net.router_id)).desired_generation > before
    api.DeleteKeyPair(kpb.DeleteKeyPairRequest(id=kp.id))
    assert cloud.row_counts()["ssh_key_pairs"] == 0


def test_bad_metadata_on_ports_is_refused_naming_the_field(
    cloud: Cloud, acme: tuple[pb.Tenant, Api]
) -> None:
    _, api = acme
    net = api.CreateNetwork(pb.CreateNetworkRequest(network=pb.Network(name="web",
                                                                       cidr="10.0.0.0/24")))
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"user_data": b"x" * (32 * 1024 + 1)}, ["port.user_data"]),
        ({"labels": {"bad key": "v"}}, ["port.labels['bad key']"]),
        ({"labels": {"k": "a\nb"}}, ["port.labels[k]"]),
        ({"labels": {"k": "<script>"}}, ["port.labels[k]"]),
        ({"labels": {f"k{i}": "v" for i in range(33)}}, ["port.labels"]),
        ({"ssh_key_pair_id": "nope"}, ["port.ssh_key_pair_id"]),
    ]
    for fields, expected in cases:
        err = rpc_error(lambda fields=fields: api.CreatePort(
            pb.CreatePortRequest(port=pb.Port(network_id=net.id, **fields))))
        assert err.code() == Code.INVALID_ARGUMENT, fields
        assert bad_fields(err) == expected, fields
    assert cloud.row_counts()["ports"] == 0
    port = api.CreatePort(pb.CreatePortRequest(port=pb.Port(network_id=net.id,
                                                            user_data=b"x" * 32 * 1024)))
    err = rpc_error(lambda: api.UpdatePort(pb.UpdatePortRequest(
        port=pb.Port(id=port.id, user_data=b"y" * (32 * 1024 + 1)))))
    assert bad_fields(err) == ["port.user_data"]
    assert api.GetPort(pb.GetPortRequest(id=port.id)).user_data == b"x" * 32 * 1024


def test_generated_passwords_are_fresh_and_unambiguous() -> None:
    made = {generate_password() for _ in range(50)}
    assert len(made) == 50
    assert all(len(p) == 16 and p.isalnum() and not set(p) & set("0O1lI") for p in made)


def test_reset_password_without_a_router_agent_fails_and_stores_nothing(
    cloud: Cloud, acme: tuple[pb.Tenant, Api]
) -> None:
    _, api = acme
    _, port = network_and_port(api)
    before = "\n".join(str(r) for table in TABLES for r in cloud.sql(f"SELECT * FROM {table}"))
    # No reconciler here: no agent to hold the password, so nothing is reset.
    assert rpc_error(lambda: api.ResetPortPassword(
        pb.ResetPortPasswordRequest(id=port.id))).code() == Code.FAILED_PRECONDITION
    assert "\n".join(str(r) for table in TABLES
                     for r in cloud.sql(f"SELECT * FROM {table}")) == before
    assert rpc_error(lambda: api.ResetPortPassword(
        pb.ResetPortPasswordRequest(id="00000000-0000-0000-0000-000000000000"))).code() == \
        Code.NOT_FOUND


def test_metadata_tokens_are_optional_or_required_and_anything_else_is_refused(
    cloud: Cloud, acme: tuple[pb.Tenant, Api]
) -> None:
    _, api = acme
    net, port = network_and_port(api)
    assert port.metadata_tokens == "optional"
    required = api.CreatePort(pb.CreatePortRequest(port=pb.Port(
        network_id=net.id, name="vm2", metadata_tokens="required")))
    assert api.GetPort(pb.GetPortRequest(id=required.id)).metadata_tokens == "required"
    updated = api.UpdatePort(pb.UpdatePortRequest(
        port=pb.Port(id=required.id, metadata_tokens="optional"),
        update_mask=FieldMask(paths=["metadata_tokens"])))
    assert updated.metadata_tokens == "optional"
    before = cloud.row_counts()["ports"]
    for bad in ("REQUIRED", "v2", "required\n", "x" * 300):
        err = rpc_error(lambda bad=bad: api.CreatePort(pb.CreatePortRequest(port=pb.Port(
            network_id=net.id, metadata_tokens=bad))))
        assert bad_fields(err) == ["port.metadata_tokens"]
        assert len(err.details()) < 200
        err = rpc_error(lambda bad=bad: api.UpdatePort(pb.UpdatePortRequest(
            port=pb.Port(id=port.id, metadata_tokens=bad))))
        assert bad_fields(err) == ["port.metadata_tokens"]
    assert cloud.row_counts()["ports"] == before
    assert api.GetPort(pb.GetPortRequest(id=port.id)).metadata_tokens == "optional"
