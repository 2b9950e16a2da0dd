"""The status registry alone: what each Envoy is offered, runs and refused (injected clock)."""

from __future__ import annotations

from xds_server.server.status import StatusRegistry, StreamStatus, clean_error, fleet_summary
from xds_server.snapshot.cache import CANARY_GROUP
from xds_server.snapshot.snapshot import CLUSTER, LISTENER


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def offered(reg: StatusRegistry, st: StreamStatus, snap: str, cds: str, lds: str) -> None:
    reg.published(st, snap, {CLUSTER: cds, LISTENER: lds})


def accept(reg: StatusRegistry, st: StreamStatus, type_url: str, version: str) -> None:
    reg.sent(st, type_url, version, "n", 1)
    reg.acked(st, type_url, version)


def test_an_envoy_runs_a_snapshot_once_every_type_is_accepted() -> None:
    clock = Clock()
    reg = StatusRegistry(clock)
    st = reg.opened("envoy-1", "c", "sotw", "peer")
    offered(reg, st, "S1", "c1", "l1")
    accept(reg, st, CLUSTER, "c1")
    # CDS accepted, LDS not asked for yet: not running S1 so far
    assert st.state == "updating" and st.running == ""
    assert st.types[LISTENER].state == "waiting"
    reg.sent(st, LISTENER, "l1", "n", 1)
    assert st.types[LISTENER].state == "sent"
    clock.now = 1005.0
    reg.acked(st, LISTENER, "l1")
    assert st.state == "in_sync" and (st.running, st.running_since) == ("S1", 1005.0)


def test_a_refusal_keeps_the_old_snapshot_running_and_clears_when_no_longer_published() -> None:
    clock = Clock()
    reg = StatusRegistry(clock)
    st = reg.opened("envoy-1", "c", "sotw", "peer")
    offered(reg, st, "S1", "c1", "l1")
    accept(reg, st, CLUSTER, "c1")
    accept(reg, st, LISTENER, "l1")
    offered(reg, st, "S2", "c1", "l2")
    assert st.state == "updating"
    reg.sent(st, LISTENER, "l2", "n2", 2)
    reg.nacked(st, LISTENER, "l2", "cannot bind\n")
    assert st.state == "refused" and st.running == "S1"
    assert st.refused_types() == [LISTENER]
    lds = st.as_dict()["types"]["LDS"]
    assert lds["state"] == "refused"
    assert (lds["acked_version"], lds["published_version"], lds["nack_error"]) == (
        "l1",
        "l2",
        "cannot bind",
    )
    assert reg.fleet_states() == {"refused": 1}
    # the config goes back to what the Envoy runs: nothing is refused any more
    offered(reg, st, "S1", "c1", "l1")
    assert st.state == "in_sync" and st.running == "S1"
    assert st.as_dict()["types"]["LDS"]["nack_error"] is None
    assert reg.fleet_states() == {"in_sync": 1}
    # the history is kept
    assert [n["version"] for n in reg.recent_nacks] == ["l2"]


def test_a_retry_accepted_later_clears_the_refusal() -> None:
    reg = StatusRegistry(Clock())
    st = reg.opened("envoy-1", "c", "sotw", "peer")
    offered(reg, st, "S2", "c1", "l2")
    accept(reg, st, CLUSTER, "c1")
    reg.sent(st, LISTENER, "l2", "n1", 2)
    reg.nacked(st, LISTENER, "l2", "port taken")
    assert st.state == "refused" and st.running == ""
    reg.sent(st, LISTENER, "l2", "n2", 2)  # the retry is still the refused version
    assert st.state == "refused"
    reg.acked(st, LISTENER, "l2")
    assert st.state == "in_sync" and st.running == "S2"


def test_repeated_refusals_are_one_entry_with_a_count() -> None:
    clock = Clock()
    reg = StatusRegistry(clock)
    st = reg.opened("envoy-1", "c", "sotw", "peer")
    error = "Error adding/updating listener(s) second: cannot bind: Address already in use\n"
    for _ in range(3):
        reg.nacked(st, LISTENER, "l2", error)
        clock.now += 30
    reg.nacked(st, LISTENER, "l3", error)
    assert reg.recent_nacks == [
        {
            "node_id": "envoy-1",
            "group": "default",
            "peer": "peer",
            "type": "LDS",
            "version": "l2",
            "error": error.strip(),
            "count": 3,
            "first_at": 1000.0,
            "at": 1060.0,
        },
        {
            "node_id": "envoy-1",
            "group": "default",
            "peer": "peer",
            "type": "LDS",
            "version": "l3",
            "error": error.strip(),
            "count": 1,
            "first_at": 1090.0,
            "at": 1090.0,
        },
    ]
    assert st.types[LISTENER].nack_count == 1  # l3 refused once


def test_the_nack_log_is_bounded() -> None:
    reg = StatusRegistry(Clock(), max_errors=3)
    st = reg.opened("envoy-1", "c", "sotw", "peer")
    for i in range(5):
        reg.nacked(st, LISTENER, f"l{i}", "bad")
    assert [n["version"] for n in reg.recent_nacks] == ["l2", "l3", "l4"]


def test_envoys_error_text_loses_blank_lines_and_becomes_one_line() -> None:
    assert clean_error("\n  a: x\n\nb: y  \n") == "a: x; b: y"
    assert clean_error("") == ""


def test_the_fleet_summary_groups_refusals_and_leaves_out_the_canary() -> None:
    reg = StatusRegistry(Clock())
    # the canary is known by the server its stream arrived on (its group), not by its name
    streams = [reg.opened(n, "c", "sotw", "p") for n in ("a", "b", "c")]
    streams.append(reg.opened("meshgate-canary-1", "c", "sotw", "unix:", CANARY_GROUP))
    for st in streams:
        offered(reg, st, "S1", "c1", "l1")
        accept(reg, st, CLUSTER, "c1")
        accept(reg, st, LISTENER, "l1")
    for st in streams:
        offered(reg, st, "S2", "c1", "l2")
        reg.sent(st, LISTENER, "l2", "n", 1)
    for st in streams[:2] + streams[3:]:
        reg.nacked(st, LISTENER, "l2", "port 80 taken\n")
    reg.acked(streams[2], LISTENER, "l2")
    summary = fleet_summary(list(reg.streams.values()), "S2")
    assert summary == {
        "published": "S2",
        "connected": 3,
        "in_sync": 1,
        "updating": 0,
        "refused": 2,
        "refusals": [
            {"types": ["LDS"], "error": "port 80 taken", "envoys": ["a", "b"], "running": ["S1"]}
        ],
    }
    assert reg.fleet_states() == {"refused": 2, "in_sync": 1}
