"""The pieces of a policy as Envoy RBAC matchers: requests (paths, methods) and callers (claims).

Pure functions from the model to ``envoy.config.rbac.v3`` messages; ``policy_rules.py``
assembles them into whole RBAC configs.

*Requests.* A path pattern (:mod:`meshgate.config.access`) becomes the cheapest matchers that
mean it: ``exact`` for a literal path, ``exact`` + ``prefix`` for ``/a/**`` (the bare ``/a``
and everything under ``/a/``), and an RE2 regex only where a ``*`` segment needs one. Envoy's
``url_path`` matches the normalised path without the query string, which is what the patterns
describe. A route that matches paths case-insensitively gets case-insensitive rules, or a
deny rule for ``/admin/**`` would let ``/ADMIN/users`` through to the same upstream.

*Callers.* The JWT filter writes each verified token's payload into dynamic metadata under its
issuer's key (``identity_names.payload_key``); a role claim may be a list (``roles``,
``groups``) or one space-separated string (OAuth2 ``scope``), so a role matcher accepts both.
"""

from __future__ import annotations

from collections.abc import Sequence

from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc_pb2
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, regex_pb2, string_pb2, value_pb2

from meshgate.config.access import ONE_SEGMENT, PathPattern, parse_pattern
from meshgate.config.identity import Issuer
from meshgate.config.regex import ENVOY_MAX_PROGRAM_SIZE, compile_re2
from xds_server.compiler.identity_names import JWT_FILTER, payload_key

#: Methods a permission naming the first also covers: servers answer ``HEAD`` like ``GET``
#: without the body, so a deny on ``GET`` that let ``HEAD`` through would leak what it hides.
IMPLIED_METHODS = {"GET": "HEAD"}


# --- requests -------------------------------------------------------------------------------


def path_matchers(pattern: PathPattern, ignore_case: bool) -> list[string_pb2.StringMatcher]:
    """String matchers on the request path that together (any of them) mean ``pattern``."""
    if pattern.has_wildcard:
        # ``ignore_case`` has no effect on a regex matcher: the flag is in the regex itself.
        return [
            string_pb2.StringMatcher(
                safe_regex=regex_pb2.RegexMatcher(regex=pattern.regex(ignore_case))
            )
        ]
    base = pattern.base()
    if not pattern.rest:
        return [string_pb2.StringMatcher(exact=base, ignore_case=ignore_case)]
    if base == "":  # '/**': every path
        return [string_pb2.StringMatcher(prefix="/")]
    return [
        string_pb2.StringMatcher(exact=base, ignore_case=ignore_case),
        string_pb2.StringMatcher(prefix=f"{base}/", ignore_case=ignore_case),
    ]


def any_of(permissions: Sequence[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    if len(permissions) == 1:
        return permissions[0]
    return rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=permissions))


def all_of(permissions: Sequence[rbac_pb2.Permission]) -> rbac_pb2.Permission:
    if not permissions:
        return rbac_pb2.Permission(any=True)
    if len(permissions) == 1:
        return permissions[0]
    return rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=permissions))


def paths_permission(patterns: Sequence[str], ignore_case: bool) -> rbac_pb2.Permission:
    """Requests whose path matches one of ``patterns``."""
    return any_of(
        [
            rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=matcher))
            for text in patterns
            for matcher in path_matchers(parse_pattern(text), ignore_case)
        ]
    )


def methods_permission(methods: Sequence[str], ignore_case: bool = False) -> rbac_pb2.Permission:
    """Requests with one of ``methods`` (each an exact ``:method`` match; ``GET`` adds ``HEAD``).

    ``ignore_case`` for deny rules: Envoy's HTTP/2 codec passes ``:method: delete`` on (its
    HTTP/1 codec refuses it) and some servers (Werkzeug, ASP.NET) take it for ``DELETE``."""
    wanted: list[str] = []
    for method in methods:
        for name in (method, IMPLIED_METHODS.get(method)):
            if name is not None and name not in wanted:
                wanted.append(name)
    return any_of(
        [
            rbac_pb2.Permission(
                header=rc_pb2.HeaderMatcher(
                    name=":method",
                    string_match=string_pb2.StringMatcher(exact=name, ignore_case=ignore_case),
                )
            )
            for name in wanted
        ]
    )


def request_permission(
    paths: Sequence[str], methods: Sequence[str], ignore_case: bool
) -> rbac_pb2.Permission:
    """Requests with one of ``paths`` and one of ``methods``; either omitted: any."""
    parts = []
    if paths:
        parts.append(paths_permission(paths, ignore_case))
    if methods:
        parts.append(methods_permission(methods))
    return all_of(parts)


def _url_path(matcher: string_pb2.StringMatcher) -> rbac_pb2.Permission:
    return rbac_pb2.Permission(url_path=path_pb2.PathMatcher(path=matcher))


def loose_path_permission(pattern: PathPattern) -> rbac_pb2.Permission:
    """Requests whose path an upstream may take for one ``pattern`` means, though it is
    written otherwise: any case, path parameters, a trailing slash
    (:meth:`~meshgate.config.access.PathPattern.loose_regex`).

    The pattern's own matchers (without case) come first and decide most requests with an
    exact or prefix comparison; the loose regex runs only for a path with a ``;`` (or, unless
    the pattern ends in ``/**``, one ending in ``/``). A pattern whose loose regex would pass
    Envoy's RE2 program size limit denies every such path below its first segment instead:
    more than it says, never less.
    """
    strict = [_url_path(m) for m in path_matchers(pattern, ignore_case=True)]
    base = pattern.base()
    if not pattern.rest and base.endswith("/") and base != "/":
        # '/admin/' also denies '/admin', which the gates below would not look at.
        strict.append(_url_path(string_pb2.StringMatcher(exact=base[:-1], ignore_case=True)))
    if pattern.base() == "" and pattern.rest:  # '/**': every path already
        return any_of(strict)
    gates = [_url_path(string_pb2.StringMatcher(contains=";"))]
    if not pattern.rest:
        gates.append(_url_path(string_pb2.StringMatcher(suffix="/")))
    loose = pattern.loose_regex()
    if compile_re2(loose)._regexp.ProgramSize() <= ENVOY_MAX_PROGRAM_SIZE:
        variant = string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=loose))
    else:
        first = pattern.segments[0]
        head = "/" if first == ONE_SEGMENT else f"/{first}"
        variant = string_pb2.StringMatcher(prefix=head, ignore_case=True)
    return any_of([*strict, all_of([any_of(gates), _url_path(variant)])])


def deny_request_permission(paths: Sequence[str], methods: Sequence[str]) -> rbac_pb2.Permission:
    """What a deny rule refuses: its requests as an upstream may read them (paths loosely,
    methods in any case). A deny rule matching more than it says fails closed; one matching
    less would let through what it was written to stop."""
    parts = []
    if paths:
        parts.append(any_of([loose_path_permission(parse_pattern(p)) for p in paths]))
    if methods:
        parts.append(methods_permission(methods, ignore_case=True))
    return all_of(parts)


# --- callers --------------------------------------------------------------------------------


def claim_principal(
    issuer: Issuer, claim: str, value: value_pb2.ValueMatcher
) -> rbac_pb2.Principal:
    """A claim (nested with '.') of ``issuer``'s verified token payload, as jwt_authn left it
    in the dynamic metadata (the policy rules and the jwt claim checks both match it)."""
    path = [payload_key(issuer.name), *claim.split(".")]
    return rbac_pb2.Principal(
        sourced_metadata=rbac_pb2.SourcedMetadata(
            metadata_matcher=metadata_pb2.MetadataMatcher(
                filter=JWT_FILTER,
                path=[metadata_pb2.MetadataMatcher.PathSegment(key=key) for key in path],
                value=value,
            )
        )
    )


def any_id(principals: Sequence[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    if len(principals) == 1:
        return principals[0]
    return rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=principals))


def _one_of(matchers: Sequence[value_pb2.ValueMatcher]) -> value_pb2.ValueMatcher:
    if len(matchers) == 1:
        return matchers[0]
    return value_pb2.ValueMatcher(or_match=value_pb2.OrMatcher(value_matchers=matchers))


def _string(**match: str) -> value_pb2.ValueMatcher:
    return value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(**match))


def claim_value_matcher(values: Sequence[str]) -> value_pb2.ValueMatcher:
    """A claim that is, or contains, one of ``values``: a list with one of them as an element,
    or a string that is one of them or has one as a space-separated word (``scope``).

    Plain string matchers, no regex: Envoy refuses regexes above a small program size, which
    a long list of role values would reach.
    """
    words = [
        _string(**{kind: text})
        for value in values
        for kind, text in (
            ("exact", value),
            ("prefix", f"{value} "),
            ("suffix", f" {value}"),
            ("contains", f" {value} "),
        )
    ]
    element = _one_of([_string(exact=value) for value in values])
    return _one_of(
        [value_pb2.ValueMatcher(list_match=value_pb2.ListMatcher(one_of=element)), *words]
    )


def holds_role(issuers: Sequence[Issuer], values: Sequence[str]) -> rbac_pb2.Principal:
    """Callers whose token (from any of ``issuers``) carries one of ``values`` in one of its
    issuer's role claims (``identity.roles``)."""
    matcher = claim_value_matcher(values)
    return any_id(
        [
            claim_principal(issuer, claim, matcher)
            for issuer in issuers
            for claim in issuer.identity.roles
        ]
    )


def has_subject(issuers: Sequence[Issuer], subjects: Sequence[str]) -> rbac_pb2.Principal:
    """Callers whose subject claim (``identity.subject`` of their token's issuer) is one of
    ``subjects``."""
    return any_id(
        [
            claim_principal(
                issuer,
                issuer.identity.subject,
                value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact=subject)),
            )
            for issuer in issuers
            for subject in subjects
        ]
    )


def authenticated(issuers: Sequence[Issuer]) -> rbac_pb2.Principal:
    """Callers with a verified token of one of ``issuers``: its payload is in the metadata.

    The match is on the ``iss`` claim, which the JWT filter has checked against the issuer
    (a ``present`` match would not do: Envoy never matches it on a whole payload object).
    """
    return any_id(
        [
            claim_principal(
                issuer,
                "iss",
                value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact=issuer.issuer)),
            )
            for issuer in issuers
        ]
    )
