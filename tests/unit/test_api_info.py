"""What the dashboard is served to ask well: the hostname rule (one with the server's check), the
backend's needs, and validation errors as sentences. Pure: no host, no service."""

from __future__ import annotations

import re

import pytest

from proximity.api.info import sentence, system_info
from proximity.errors import InputError
from proximity.settings import check_hostname, load_settings


@pytest.mark.parametrize("name", ["Bad_Name", "bad-", "101", "wpad", "ROUTER", "a.b", "x" * 64])
def test_the_served_rule_refuses_what_the_check_refuses_in_its_words(name):
    rule = system_info(load_settings(netns="sb1"), "0.1.0")["hostname_rule"]
    with pytest.raises(InputError) as refused:
        check_hostname(name)
    # The dashboard's order: the pattern, all digits, the reserved names; each message a template.
    if not re.fullmatch(rule["pattern"].strip("^$"), name):
        key = "label"
    elif name.isdigit():
        key = "digits"
    else:
        assert name.lower() in rule["reserved"]
        key = "reserved"
    assert rule["messages"][key].format(name=name) == str(refused.value)


def test_a_good_name_passes_the_served_rule():
    rule = system_info(load_settings(), "0.1.0")["hostname_rule"]
    assert re.fullmatch(rule["pattern"].strip("^$"), "nginx-01") and "nginx-01" not in rule["reserved"]


def test_the_backend_and_its_template_need():
    sandbox = system_info(load_settings(netns="sb1"), "0.1.0")
    assert (sandbox["backend"], sandbox["needs_template"], sandbox["sandbox"]) == ("lxc", False, "sb1")
    pve = system_info(load_settings(proxmox_template="local:vztmpl/debian-12.tar.zst"), "0.1.0")
    assert (pve["backend"], pve["needs_template"], pve["sandbox"]) == ("proxmox", True, None)
    assert pve["template"] == "local:vztmpl/debian-12.tar.zst"


def test_validation_errors_read_as_sentences_that_name_the_field():
    hostname = {"loc": ("body", "hostname"), "msg": "Value error, hostname 'Bad_Name' is not a valid RFC 1123 label"}
    assert sentence(hostname) == "Hostname 'Bad_Name' is not a valid RFC 1123 label."
    memory = {"loc": ("body", "memory"), "msg": "Input should be greater than or equal to 16"}
    assert sentence(memory) == "Memory: input should be greater than or equal to 16."
    missing = {"loc": ("body",), "msg": "Field required"}
    assert sentence(missing) == "Field required."
