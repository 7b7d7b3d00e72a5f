"""The fabrics' pure parts: the libvirt interface a VM gets on OVS."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from common.fabric.ovs import OvsFabric


def test_ovs_interface_xml_is_an_access_port_without_offloads() -> None:
    x = ET.fromstring(OvsFabric("br0").vm_interface_xml("vt1", 101, "02:00:00:00:00:01"))
    assert x.find("virtualport").get("type") == "openvswitch"
    assert x.find("vlan/tag").get("id") == "101"
    assert x.find("driver/host").get("csum") == "off"
    assert x.find("source").get("bridge") == "br0"


def test_no_segment_but_the_provider_gets_the_provider_vlan_or_vni() -> None:
    import pytest

    from common.fabric.base import PROVIDER_SEGMENT, FabricError
    from common.fabric.vxlan import VxlanFabric

    ovs = OvsFabric("br0", provider_vlan=4000)
    assert ovs.vlan(PROVIDER_SEGMENT) == 4000
    assert ovs.vlan(2000) == 2000
    with pytest.raises(FabricError, match="reserved"):
        ovs.vlan(4000)
    with pytest.raises(FabricError, match="reserved"):
        ovs.vm_interface_xml("vt1", 4000, "02:00:00:00:00:01")
    vx = VxlanFabric("cn", "ul", "10.0.0.1", [], provider_vni=4000)
    assert vx.vni(PROVIDER_SEGMENT) == 4000
    with pytest.raises(FabricError, match="reserved"):
        vx.vni(4000)
