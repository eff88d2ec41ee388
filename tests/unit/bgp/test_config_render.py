"""ExaBGP configuration and environment rendering (golden checks of the lines that matter)."""

from __future__ import annotations

import base64
import configparser
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lbspeaker.bgp.config_render import render_config, render_env
from lbspeaker.bgp.model import BgpPeer, ResolvedPeer
from lbspeaker.bgp.supervisor import DEFAULT_EXABGP_ARGV, RELAY_SCRIPT

RELAY = ["/usr/bin/python3", "-I", "/opt/lbspeaker/bgp/relay.py", "/run/lbspeaker/api.sock", "abc123"]


def resolved(**kwargs: Any) -> ResolvedPeer:
    """A peer for 192.0.2.1, AS 64512 from AS 64500; ``kwargs`` are BgpPeer's."""
    base: dict[str, Any] = {"peer_address": "192.0.2.1", "peer_asn": 64512, "my_asn": 64500}
    base.update(kwargs)
    peer = BgpPeer(**base)
    local = "2001:db8:1::11" if peer.family == 6 else "192.0.2.11"
    return ResolvedPeer(peer=peer, local_address=local, router_id="192.0.2.11")


def block(text: str, peer: str) -> list[str]:
    """The stripped lines of one neighbour block."""
    lines = text.splitlines()
    start = lines.index(f"neighbor {peer} {{")
    end = next(i for i in range(start, len(lines)) if lines[i] == "}")
    return [line.strip() for line in lines[start + 1 : end]]


def test_process_section_runs_the_relay_with_json() -> None:
    text = render_config([resolved()], RELAY)
    assert "process lbspeaker {\n    run " + " ".join(RELAY) + ";\n    encoder json;\n" in text
    assert "    respawn false;\n}" in text


def test_ebgp_neighbour_block() -> None:
    lines = block(render_config([resolved(hold_time=30)], RELAY, graceful_restart_time=90), "192.0.2.1")
    for expected in [
        "router-id 192.0.2.11;",
        "local-address 192.0.2.11;",
        "local-as 64500;",
        "peer-as 64512;",
        "hold-time 30;",
        "outgoing-ttl 1;",
        "manual-eor true;",
        "graceful-restart 90;",
        "ipv4 unicast;",
        "processes [ lbspeaker ];",
        "neighbor-changes;",
        "update;",
    ]:
        assert expected in lines, expected
    assert not any(line.startswith(("connect", "md5")) for line in lines)


def test_multihop_ibgp_port_and_v6() -> None:
    text = render_config(
        [
            resolved(ebgp_multihop=True, peer_port=1179),
            resolved(peer_address="2001:db8:1::1", peer_asn=64500),
        ],
        RELAY,
    )
    v4 = block(text, "192.0.2.1")
    assert "outgoing-ttl 255;" in v4
    assert "connect 1179;" in v4
    v6 = block(text, "2001:db8:1::1")
    assert "ipv6 unicast;" in v6
    assert "local-address 2001:db8:1::11;" in v6
    assert "router-id 192.0.2.11;" in v6
    assert not any(line.startswith("outgoing-ttl") for line in v6)  # iBGP: system TTL


def test_keepalive_time_and_route_refresh() -> None:
    lines = block(render_config([resolved(hold_time=9, keepalive_time=1)], RELAY), "192.0.2.1")
    assert "keepalive-time 1;" in lines
    assert "route-refresh enable;" in lines
    assert not any("keepalive" in line for line in block(render_config([resolved()], RELAY), "192.0.2.1"))


def test_password_is_written_base64_only() -> None:
    password = 'pa ss;"{word}'
    text = render_config([resolved(password=password)], RELAY)
    lines = block(text, "192.0.2.1")
    assert "md5-base64 true;" in lines
    assert f"md5-password {base64.b64encode(password.encode()).decode()};" in lines
    assert password not in text


def test_host_name_only_when_valid() -> None:
    good = block(render_config([resolved()], RELAY, host_name="node-1.example"), "192.0.2.1")
    assert "host-name node-1.example;" in good
    bad = block(render_config([resolved()], RELAY, host_name="bad name"), "192.0.2.1")
    assert not any("host-name" in line for line in bad)


def test_rendering_is_deterministic_and_sorted() -> None:
    a = resolved(peer_address="192.0.2.2")
    b = resolved(peer_address="192.0.2.1")
    assert render_config([a, b], RELAY) == render_config([b, a], RELAY)
    text = render_config([a, b], RELAY)
    assert text.index("neighbor 192.0.2.1 {") < text.index("neighbor 192.0.2.2 {")


@pytest.mark.parametrize(
    ("peers", "relay", "gr", "message"),
    [
        ([resolved(), resolved()], RELAY, 120, "listed twice"),
        ([resolved()], ["/usr/bin/python3", "/path with space/relay.py"], 120, "relay argument"),
        ([resolved()], RELAY, 0, "graceful restart time"),
        ([resolved()], RELAY, 4096, "graceful restart time"),
    ],
)
def test_render_rejects(peers: list[ResolvedPeer], relay: list[str], gr: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_config(peers, relay, graceful_restart_time=gr)


def test_env_file() -> None:
    ini = configparser.ConfigParser()
    ini.read_string(render_env("root"))
    assert ini["exabgp.api"]["ack"] == "true"
    assert ini["exabgp.api"]["cli"] == "false"
    assert ini["exabgp.api"]["respawn"] == "false"
    assert ini["exabgp.daemon"]["user"] == "'root'"
    assert ini["exabgp.daemon"]["daemonize"] == "false"
    assert ini["exabgp.log"]["destination"] == "'stderr'"
    assert ini["exabgp.tcp"]["bind"] == "''"
    with pytest.raises(ValueError):
        render_env("bad user")


NO_EXABGP = importlib.util.find_spec("exabgp") is None


@pytest.mark.skipif(NO_EXABGP, reason="exabgp not installed (pip install exabgp==5.0.15)")
def test_exabgp_accepts_the_rendered_config(tmp_path: Path) -> None:
    peers = [
        resolved(password='pa"ss;{x} y', ebgp_multihop=True, peer_port=1179, hold_time=30, keepalive_time=10),
        resolved(peer_address="2001:db8:1::1", peer_asn=64500, hold_time=0),
    ]
    relay = [sys.executable, "-I", str(RELAY_SCRIPT), str(tmp_path / "api.sock"), "token"]
    env_file = tmp_path / "exabgp.env"
    env_file.write_text(render_env("root"))
    env = {k: v for k, v in os.environ.items() if not k.lower().startswith("exabgp")}

    def validate(text: str, exabgp: tuple[str, ...] = DEFAULT_EXABGP_ARGV) -> subprocess.CompletedProcess[str]:
        conf = tmp_path / "exabgp.conf"
        conf.write_text(text)
        argv = [*exabgp, "--env-file", str(env_file), "validate", str(conf)]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)

    text = render_config(peers, relay, host_name="node-1")
    assert "keepalive-time 10;" in text
    result = validate(text)
    assert result.returncode == 0, result.stdout + result.stderr
    # The check can fail: ExaBGP refuses a hold time of 1 s.
    assert validate(text.replace("hold-time 30;", "hold-time 1;")).returncode != 0
    # keepalive-time is our addition: plain ExaBGP refuses it, ours checks its value too.
    assert validate(text, (sys.executable, "-m", "exabgp")).returncode != 0
    assert validate(text.replace("keepalive-time 10;", "keepalive-time x;")).returncode != 0
