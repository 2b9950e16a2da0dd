"""Token checks jwt_authn does not make: an RBAC filter (action DENY) on the verified token.

Measured against Envoy 1.40, ``jwt_authn`` verifies a token's signature, ``exp``/``nbf``,
issuer and audience, and nothing else. It accepts:

* a ``crit`` header (RFC 7515 §4.1.11: a recipient that does not understand the listed
  extensions must reject the token; jwt_authn understands none and ignores the member);
* any algorithm its key fits: a key without ``alg`` verifies RS256 *and* PS256, so the
  issuer's allowlist needs a check of its own;
* header members that carry or point to keys (``jwk``, ``jku``, ``x5u``, ``x5c``): jwt_authn
  never uses them, but an upstream or a later verifier that does could be tricked into trusting
  a key the client chose, so a token carrying them is refused outright;
* an ``iat`` in the future;
* a cookie source named twice (``session=A; session=B``): jwt_authn verifies the first copy,
  and the cookie is always forwarded, so an upstream reading the other one (or all of them)
  would take an unverified token for the verified one;
* claims the gateway passes on as headers that a header cannot carry as they are: Envoy drops
  leading and trailing whitespace (a subject ``" alice"`` would reach the upstream as
  ``alice``, while a policy rule for ``alice`` did not match it) and refuses control
  characters (the request would fail with a 503); a subject or tenant that is not a string
  would arrive as JSON text no rule matched.

The JOSE header and payload of every verified token are in dynamic metadata (``header_key``,
``payload_key``), so one DENY rule per check, each matching the listener's issuers, refuses
those tokens right after jwt_authn. The listener's local replies answer such a denial 401 with
the check's reason (``replies.py``), as a bad token, not 403.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as http_rbac_pb2
from envoy.type.matcher.v3 import metadata_pb2, regex_pb2, string_pb2, value_pb2

from meshgate.config.identity import Issuer
from xds_server.compiler.cel import Cel, Expr
from xds_server.compiler.identity_names import JWT_FILTER, header_key, payload_key
from xds_server.compiler.policy_matchers import claim_principal

#: Stat prefix of the checks (``http.<listener>.rbac.token_check.denied``, and
#: ``...token_check.shadow_denied`` on shadow routes), apart from the policy's RBAC filters.
STAT_PREFIX = "token_check"


@dataclass(frozen=True)
class TokenCheck:
    """One refusal: its RBAC policy name (never a config name: those have no ':'), the
    machine-readable reason clients get, and the message."""

    name: str
    reason: str
    message: str
    #: The header member whose mere presence is refused (None: a check of its own).
    member: str | None = None


#: Header members that bring a key along, or say where to fetch one.
KEY_MEMBERS: tuple[tuple[str, str, str], ...] = (
    ("jwk", "embedded_key", "the token carries its own key ('jwk')"),
    ("x5c", "embedded_key", "the token carries its own certificate chain ('x5c')"),
    ("jku", "key_url", "the token names a URL to fetch its key from ('jku')"),
    ("x5u", "key_url", "the token names a URL to fetch its certificate from ('x5u')"),
)

CRIT = TokenCheck(
    "token:crit",
    "crit_header",
    "the token's 'crit' header requires extensions the gateway does not implement",
    "crit",
)
ALG = TokenCheck(
    "token:alg", "algorithm_not_allowed", "the token's algorithm is not allowed for its issuer"
)
IAT = TokenCheck("token:iat", "issued_in_future", "the token says it was issued in the future")
DUPLICATE = TokenCheck(
    "token:duplicate",
    "duplicate_token",
    "the token's cookie is sent more than once; the gateway verifies one copy only",
)
CLAIMS = TokenCheck(
    "token:claims",
    "claim_invalid",
    "a claim the gateway passes on as a header has leading or trailing whitespace, a control "
    "character, or (subject, tenant) is not a string",
)
KEY_CHECKS = tuple(
    TokenCheck(f"token:{member}", reason, f"{message}; keys come from the issuer only", member)
    for member, reason, message in KEY_MEMBERS
)
#: Every check, in the order of the RBAC policies.
TOKEN_CHECKS: tuple[TokenCheck, ...] = (CRIT, *KEY_CHECKS, ALG, IAT, DUPLICATE, CLAIMS)

#: Registered claims jwt_authn parses as strings (it refuses a token where they are not).
STRING_CLAIMS = frozenset({"iss", "sub"})
#: Text a header cannot carry as it is: leading or trailing whitespace (dropped by Envoy and
#: every HTTP parser), control characters (refused by Envoy).
UNSENDABLE_TEXT = r"(?s)[ \t].*|.*[ \t]|.*[\x00-\x1f\x7f].*"


def _header_member(issuer: Issuer, member: str, exact: str | None = None) -> rbac_pb2.Principal:
    """The verified token's header member ``member`` (present, or equal to ``exact``)."""
    matcher = (
        value_pb2.ValueMatcher(present_match=True)
        if exact is None
        else value_pb2.ValueMatcher(string_match=string_pb2.StringMatcher(exact=exact))
    )
    return rbac_pb2.Principal(
        sourced_metadata=rbac_pb2.SourcedMetadata(
            metadata_matcher=metadata_pb2.MetadataMatcher(
                filter=JWT_FILTER,
                path=[
                    metadata_pb2.MetadataMatcher.PathSegment(key=header_key(issuer.name)),
                    metadata_pb2.MetadataMatcher.PathSegment(key=member),
                ],
                value=matcher,
            )
        )
    )


def _regex(regex: str) -> string_pb2.StringMatcher:
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=regex))


def twice_in_cookies(name: str) -> str:
    """A regex (searched, as CEL's ``matches`` does) for the ``cookie`` header values holding
    the cookie ``name`` twice: several ``Cookie`` lines are joined with ',' in the lookup,
    cookies within one with ';', and parsers drop the spaces around a name."""
    one = rf"[ \t]*{re.escape(name)}[ \t]*="
    return rf"(?:^|[;,]){one}(?s:.*)[;,]{one}"


def _duplicated(cel: Cel, issuer: Issuer) -> Expr | None:
    """A verified token of ``issuer`` next to a second copy of its cookie. Only after
    verification: a request without a token pays nothing, and the cookies of another
    issuer's routes are not judged here. CEL, because an RBAC header matcher tests each
    ``Cookie`` line apart, and the second copy may come on a line of its own."""
    cookies = [t.cookie for t in issuer.tokens if t.cookie is not None]
    if not cookies:
        return None
    twice = []
    for cookie in cookies:
        present, value = cel.request_header("cookie")
        regex = cel.string(twice_in_cookies(cookie))
        twice.append(cel.all_of(present, cel.method(value, "matches", regex)))
    return cel.all_of(cel.has_metadata(JWT_FILTER, payload_key(issuer.name)), cel.any_of(*twice))


def _all(principals: Sequence[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    return rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=principals))


def _unsendable_claims(issuer: Issuer) -> rbac_pb2.Principal:
    """A verified token of ``issuer`` with a claim that is sent upstream (subject, tenant,
    ``claim_headers``) whose text a header cannot carry, or a subject or tenant that is not
    a string (any string is ``(?s).*``; jwt_authn itself holds ``sub`` to be one)."""
    bad_text = value_pb2.ValueMatcher(string_match=_regex(UNSENDABLE_TEXT))
    any_text = value_pb2.ValueMatcher(string_match=_regex("(?s).*"))
    identity = [issuer.identity.subject]
    if issuer.identity.tenant is not None:
        identity.append(issuer.identity.tenant)
    sent = [*identity, *(c for c in issuer.claim_headers.values() if c not in identity)]
    ids = [claim_principal(issuer, claim, bad_text) for claim in sent]
    ids += [
        _all(
            [
                claim_principal(issuer, claim, value_pb2.ValueMatcher(present_match=True)),
                rbac_pb2.Principal(not_id=claim_principal(issuer, claim, any_text)),
            ]
        )
        for claim in identity
        if claim not in STRING_CLAIMS
    ]
    return _any(ids)


def _any(principals: Sequence[rbac_pb2.Principal]) -> rbac_pb2.Principal:
    if len(principals) == 1:
        return principals[0]
    return rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=principals))


def _present(issuers: Sequence[Issuer], member: str) -> rbac_pb2.Policy:
    return rbac_pb2.Policy(
        permissions=[rbac_pb2.Permission(any=True)],
        principals=[_any([_header_member(i, member) for i in issuers])],
    )


def _algorithm_not_allowed(issuer: Issuer) -> rbac_pb2.Principal:
    """A verified token of ``issuer`` whose ``alg`` is none of the issuer's."""
    allowed = _any([_header_member(issuer, "alg", alg) for alg in issuer.algorithms])
    return rbac_pb2.Principal(
        and_ids=rbac_pb2.Principal.Set(
            ids=[_header_member(issuer, "alg"), rbac_pb2.Principal(not_id=allowed)]
        )
    )


def _issued_in_future(cel: Cel, issuer: Issuer) -> Expr:
    """``iat`` later than now + leeway (``iat`` is a number: jwt_authn refuses others)."""
    payload = payload_key(issuer.name)

    def claims() -> Expr:  # a fresh node each time: node ids are unique in an expression
        return cel.index(cel.dynamic_metadata(JWT_FILTER), payload)

    leeway = int(issuer.leeway.total_seconds())
    latest = cel.call("double", cel.plus(cel.now_seconds(), cel.int(leeway)))
    return cel.all_of(
        cel.has_metadata(JWT_FILTER, payload),
        cel.has_key(claims(), "iat"),
        cel.greater(cel.index(claims(), "iat"), latest),
    )


def token_rules(issuers: Sequence[Issuer]) -> rbac_pb2.RBAC:
    """The DENY rules of every check for tokens of ``issuers``."""
    policies = {
        check.name: _present(issuers, check.member)
        for check in TOKEN_CHECKS
        if check.member is not None
    }
    policies[ALG.name] = rbac_pb2.Policy(
        permissions=[rbac_pb2.Permission(any=True)],
        principals=[_any([_algorithm_not_allowed(i) for i in issuers])],
    )
    dup_cel = Cel()
    duplicated = [e for e in (_duplicated(dup_cel, i) for i in issuers) if e is not None]
    if duplicated:
        policies[DUPLICATE.name] = rbac_pb2.Policy(
            permissions=[rbac_pb2.Permission(any=True)],
            principals=[rbac_pb2.Principal(any=True)],
            condition=dup_cel.any_of(*duplicated),
        )
    policies[CLAIMS.name] = rbac_pb2.Policy(
        permissions=[rbac_pb2.Permission(any=True)],
        principals=[_any([_unsendable_claims(i) for i in issuers])],
    )
    cel = Cel()
    policies[IAT.name] = rbac_pb2.Policy(
        permissions=[rbac_pb2.Permission(any=True)],
        principals=[rbac_pb2.Principal(any=True)],
        condition=cel.any_of(*[_issued_in_future(cel, i) for i in issuers]),
    )
    return rbac_pb2.RBAC(action=rbac_pb2.RBAC.DENY, policies=policies)


def token_filter_config(issuers: Sequence[Issuer]) -> http_rbac_pb2.RBAC:
    """The listener's token check filter (in the chain disabled; enforcing routes enable it)."""
    return http_rbac_pb2.RBAC(
        rules=token_rules(issuers),
        rules_stat_prefix=STAT_PREFIX,
        shadow_rules_stat_prefix=STAT_PREFIX,
    )


def shadow_token_checks(issuers: Sequence[Issuer]) -> http_rbac_pb2.RBACPerRoute:
    """For a route whose policy is in shadow mode: the same checks, only counted and logged."""
    return http_rbac_pb2.RBACPerRoute(
        rbac=http_rbac_pb2.RBAC(
            shadow_rules=token_rules(issuers), shadow_rules_stat_prefix=STAT_PREFIX
        )
    )
