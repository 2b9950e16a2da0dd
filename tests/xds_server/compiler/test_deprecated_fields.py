"""No deprecated Envoy field or enum value in anything the compiler generates.

Every golden case, the quickstart and every example config under ``examples/`` is compiled and
every message in it walked (typed configs unpacked): no field that is set, and no enum value
used, may be marked ``deprecated`` in the API package (xds-protos). Envoy itself can know of
deprecations the package does not have yet; ``tests/integration/test_deprecated_fields.py``
asks Envoy.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from meshgate.loader import load_config
from tests.paths import ROOT
from tests.support.compile_inputs import placeholder_secrets
from xds_server.compiler import compile_snapshot
from xds_server.snapshot.snapshot import Snapshot

CONFIGS = sorted(
    [
        *(ROOT / "tests" / "golden").glob("*.yaml"),
        *(ROOT / "examples").glob("*.yaml"),
    ]
)


def _compile(path: Path) -> Snapshot:
    """Secrets the config names get placeholder values (the compile job reads real ones)."""
    config = load_config(path).config
    return compile_snapshot(config, secrets=placeholder_secrets(config))


def deprecated_uses(msg: Message, path: str = "") -> list[str]:
    """``path: message.field`` for every deprecated field set, and enum value used, in
    ``msg`` and everything below it."""
    if isinstance(msg, any_pb2.Any):
        if not msg.type_url:
            return []
        desc = descriptor_pool.Default().FindMessageTypeByName(msg.type_url.rsplit("/", 1)[-1])
        inner = message_factory.GetMessageClass(desc)()
        msg.Unpack(inner)
        return deprecated_uses(inner, path)
    found: list[str] = []
    for field, value in msg.ListFields():
        where = f"{path}.{field.name}" if path else field.name
        if field.GetOptions().deprecated:
            found.append(f"{where}: {msg.DESCRIPTOR.full_name}.{field.name}")
        if field.type == FieldDescriptor.TYPE_ENUM:
            for number in value if field.is_repeated else [value]:
                enum_value = field.enum_type.values_by_number.get(number)
                if enum_value is not None and enum_value.GetOptions().deprecated:
                    found.append(f"{where}: {field.enum_type.full_name}.{enum_value.name}")
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            found += [
                use
                for key, item in value.items()
                if isinstance(item, Message)
                for use in deprecated_uses(item, f"{where}[{key}]")
            ]
        elif field.is_repeated:
            found += [
                u for i, item in enumerate(value) for u in deprecated_uses(item, f"{where}[{i}]")
            ]
        else:
            found += deprecated_uses(value, where)
    return found


def test_there_are_configs() -> None:
    assert len(CONFIGS) > 20


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_no_deprecated_field_is_generated(path: Path) -> None:
    snapshot = _compile(path)
    uses = [
        f"{name}: {use}"
        for resources in snapshot.resources.values()
        for name, res in resources.items()
        for use in deprecated_uses(res.unpack())
    ]
    assert uses == []


def test_the_walk_finds_a_deprecated_field() -> None:
    """Guards the walk itself: a deprecated field inside a typed config is found."""
    from envoy.extensions.filters.http.compressor.v3 import compressor_pb2

    packed = any_pb2.Any()
    packed.Pack(compressor_pb2.Compressor(content_type=["text/html"]))
    assert deprecated_uses(packed) == [
        "content_type: envoy.extensions.filters.http.compressor.v3.Compressor.content_type"
    ]
