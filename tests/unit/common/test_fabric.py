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
