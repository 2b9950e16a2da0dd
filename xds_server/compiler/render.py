"""The JSON view of compiled resources: what ``meshgate render`` prints and golden tests compare."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from xds_server.snapshot.snapshot import ORDER, Snapshot, short_name


def snapshot_to_dict(snapshot: Snapshot) -> dict[str, Any]:
    out: dict[str, Any] = {"version": snapshot.version, "resources": {}}
    for type_url in ORDER:
        out["resources"][short_name(type_url)] = [
            json_format.MessageToDict(res.unpack(), preserving_proto_field_name=True)
            for res in snapshot.of_type(type_url).values()
        ]
    out["versions"] = {short_name(t): snapshot.type_version(t) for t in ORDER}
    return out
