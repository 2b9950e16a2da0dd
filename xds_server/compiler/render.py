"""The JSON view of compiled resources: what ``meshgate render`` prints and golden tests compare.

Secrets (SDS) are shown with their values replaced by ``<redacted>``: a render is pasted into
tickets and diffs, and goldens are committed. That a secret exists, its name and its kind are
shown; its value never is.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from xds_server.snapshot.snapshot import SECRET, Snapshot, short_name

REDACTED = "<redacted>"
#: ``DataSource`` fields that carry a value inline.
_INLINE = frozenset({"inline_string", "inline_bytes"})


def snapshot_to_dict(snapshot: Snapshot) -> dict[str, Any]:
    out: dict[str, Any] = {"version": snapshot.version, "resources": {}}
    for type_url in snapshot.types:
        resources = [
            json_format.MessageToDict(res.unpack(), preserving_proto_field_name=True)
            for res in snapshot.of_type(type_url).values()
        ]
        if type_url == SECRET:
            resources = [_redacted(r) for r in resources]
        out["resources"][short_name(type_url)] = resources
    out["versions"] = {short_name(t): snapshot.type_version(t) for t in snapshot.types}
    return out


def _redacted(value: Any) -> Any:
    """``value`` (a resource as JSON) with every inline data source value replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if k in _INLINE else _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value
