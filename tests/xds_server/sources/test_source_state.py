"""The state holder: the latest word of each source, merged, and when to recompile."""

from __future__ import annotations

from meshgate.config import Endpoint
from meshgate.problems import Problem
from xds_server.compiler.context import IssuerKeys
from xds_server.sources.base import ConfigChanged, EndpointsChanged, KeysChanged, SourceError
from xds_server.sources.state import SourceState, merge_endpoints
from xds_server.worker.secret_files import NO_SECRET_FILES, SecretFiles

FILE = "file:/etc/gw.yaml"


def ep(port: int, address: str = "10.0.0.1") -> Endpoint:
    return Endpoint(address=address, port=port)


def config_changed(revision: str = "1") -> ConfigChanged:
    return ConfigChanged(FILE, "/etc/gw.yaml", revision)


def test_nothing_to_compile_before_a_config_then_every_change_recompiles() -> None:
    state = SourceState()
    assert state.apply(EndpointsChanged("consul", {"api": (ep(80),)})) is None
    first = state.apply(config_changed())
    assert first is not None and first.generation == 2
    assert first.discovered == {"api": (ep(80),)}
    second = state.apply(EndpointsChanged("consul", {"api": (ep(81),)}))
    assert second is not None and second.generation == 3
    assert second.discovered == {"api": (ep(81),)}


def test_the_same_endpoints_again_change_nothing() -> None:
    state = SourceState()
    state.apply(config_changed())
    assert state.apply(EndpointsChanged("k8s", {"api": (ep(80),)})) is not None
    assert state.apply(EndpointsChanged("k8s", {"api": (ep(80),)})) is None


def test_endpoints_of_all_sources_are_merged_in_a_stable_order() -> None:
    merged = merge_endpoints(
        {
            "k8s": EndpointsChanged("k8s", {"api": (ep(2), ep(1)), "web": (ep(9),)}),
            "consul": EndpointsChanged("consul", {"api": (ep(1), ep(3))}),
        }
    )
    # consul before k8s (by source name); an endpoint both report is listed once
    assert merged == {"api": (ep(1), ep(3), ep(2)), "web": (ep(9),)}
    assert list(merged) == ["api", "web"]


def test_an_unchanged_file_may_be_skipped_only_while_its_outcome_stands() -> None:
    state = SourceState()
    first = state.apply(config_changed("1"))
    assert first is not None and first.known_digest is None
    state.settle(first.generation, "abc")
    touched = state.apply(config_changed("2"))
    assert touched is not None and touched.known_digest == "abc"  # the worker may skip

    # an outcome for an input that has since been superseded settles nothing
    newer = state.apply(config_changed("3"))
    assert newer is not None
    state.settle(touched.generation, "zzz")
    assert state.apply(config_changed("4")).known_digest == "abc"  # type: ignore[union-attr]

    # new endpoints: the same file must be compiled in full
    with_endpoints = state.apply(EndpointsChanged("consul", {"api": (ep(80),)}))
    assert with_endpoints is not None and with_endpoints.known_digest is None


def test_a_source_error_is_kept_until_that_source_delivers_again() -> None:
    state = SourceState()
    first = state.apply(config_changed())
    assert first is not None
    state.settle(first.generation, "abc")
    problem = Problem("/etc/gw.yaml", "", "file not found")
    assert state.apply(SourceError(FILE, (problem,), "missing")) is None
    assert state.errors[FILE].problems == (problem,)
    back = state.apply(config_changed("2"))
    assert FILE not in state.errors
    # the file came back: even with its old content, it is compiled and reported again
    assert back is not None and back.known_digest is None


def test_new_keys_recompile_in_full_and_the_same_keys_do_nothing() -> None:
    keys = {"corp": IssuerKeys("url:https://idp/jwks", '{"keys":[]}')}
    state = SourceState()
    # keys known before the config (read from disk at start): carried by the first input
    assert state.apply(KeysChanged("jwks", keys)) is None
    first = state.apply(config_changed())
    assert first is not None and first.jwks == keys
    state.settle(first.generation, "abc")
    rotated = {"corp": IssuerKeys("url:https://idp/jwks", '{"keys":[1]}')}
    second = state.apply(KeysChanged("jwks", rotated))
    # the file did not change, but the worker must not answer "unchanged" from its digest
    assert second is not None and second.known_digest is None and second.jwks == rotated
    state.settle(second.generation, "abc")
    assert state.apply(KeysChanged("jwks", dict(rotated))) is None
    dropped = state.apply(KeysChanged("jwks", {}))
    assert dropped is not None and dropped.jwks == {}


def test_the_secret_files_an_outcome_read_go_with_its_digest() -> None:
    read = SecretFiles(("/etc/meshgate/hmac.key",), "d" * 32)
    state = SourceState()
    first = state.apply(config_changed("1"))
    assert first is not None and first.known_secrets == NO_SECRET_FILES
    state.settle(first.generation, "abc", read)
    # the secret file moved (the watcher tracks it): the worker compares them too
    touched = state.apply(config_changed("2"))
    assert touched is not None and (touched.known_digest, touched.known_secrets) == ("abc", read)
    # new endpoints: compiled in full, nothing known
    full = state.apply(EndpointsChanged("consul", {"api": (ep(80),)}))
    assert full is not None and (full.known_digest, full.known_secrets) == (None, NO_SECRET_FILES)
