"""A policy as the per-route configs of the deny and the allow RBAC filters.

Two filters, because Envoy's RBAC engine has one action: the *deny* filter (action DENY) holds
the policy's ``deny`` rules and runs first, so a deny wins over every grant; the *allow* filter
(action ALLOW) holds the grants, and what none of them allows is refused. Both answer 403.

Grants, each one RBAC policy (its id says where it comes from, in the access log and in the
response code details of a denial):

* ``policy:<name>:role:<role>``: each role in ``roles``: the role's permissions, with what it
  inherits, to callers holding it or any role that inherits it;
* ``policy:<name>:allow:<i>``: each ``allow`` rule: its requests (``paths``, ``methods``) to
  its callers (``roles``, ``subjects``, ``authenticated``); without ``paths`` a rule's roles
  grant their own permissions (narrowed to its ``methods``);
* ``policy:<name>:authenticated``: a policy without ``roles`` and ``allow`` rules lets any
  caller with a verified token through.

Deny rules are ``policy:<name>:deny:<i>``. They match requests as upstreams may read them
(paths with case, path parameters and a trailing slash aside, methods in any case:
``policy_matchers.deny_request_permission``), grants exactly: a deny that matches more fails
closed, a grant that matched more would fail open.

In ``mode: shadow`` both filters get the same rules as ``shadow_rules`` and enforce nothing
(a deny rule with ``shadow: true`` alone is tried out the same way); Envoy writes what they
would have decided into dynamic metadata, which the access log shows.

An enforcing policy always switches the deny filter on, even without deny rules: its
"allowed" result in the metadata is how the 403 reply tells a denial by this policy's allow
filter (details ``rbac_access_denied_matched_policy[none]``, as for any ALLOW engine) from one
by another RBAC filter earlier in the chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from envoy.config.rbac.v3 import rbac_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2

from meshgate.config import GatewayConfig
from meshgate.config.access import RoleError, RoleGraph, claim_values
from meshgate.config.identity import Issuer, Policy, Rule
from xds_server.compiler.identity_names import ALLOW_RBAC_PREFIX, DENY_RBAC_PREFIX
from xds_server.compiler.policy_matchers import (
    all_of,
    any_id,
    any_of,
    authenticated,
    deny_request_permission,
    has_subject,
    holds_role,
    methods_permission,
    request_permission,
)

#: Every RBAC policy id of a meshgate policy starts with this (see the module docstring).
RULE_ID_PREFIX = "policy:"


class PolicyError(ValueError):
    """A policy that cannot be compiled: it names an issuer or role that does not exist, its
    roles inherit in a circle, or it grants a role without permissions. The file checks
    reject each of these; a config built past them gets this error, and the route answers 503
    rather than be served without the policy it names."""


@dataclass(frozen=True)
class PolicyRules:
    """A compiled policy: the per-route configs of the deny and the allow filter."""

    policy: str
    mode: str
    #: None: the deny filter stays off for the routes of this policy (a shadow policy without
    #: deny rules).
    deny: rbac_filter_pb2.RBACPerRoute | None
    allow: rbac_filter_pb2.RBACPerRoute


def rule_id(policy: str, kind: str, detail: str | int) -> str:
    return f"{RULE_ID_PREFIX}{policy}:{kind}:{detail}"


def compile_policy(
    config: GatewayConfig, graph: RoleGraph, policy: Policy, ignore_case: bool
) -> PolicyRules:
    """``policy`` for routes matching paths with (or without) ``ignore_case``."""
    try:
        return _Compiler(config, graph, policy, ignore_case).rules()
    except RoleError as exc:
        raise PolicyError(f"policy {policy.name!r}: {exc}") from None


@dataclass
class _Compiler:
    config: GatewayConfig
    graph: RoleGraph
    policy: Policy
    ignore_case: bool

    def rules(self) -> PolicyRules:
        issuers = self._issuers()
        name, shadow = self.policy.name, self.policy.mode == "shadow"
        enforced: dict[str, rbac_pb2.Policy] = {}
        tried: dict[str, rbac_pb2.Policy] = {}
        for index, rule in enumerate(self.policy.deny):
            target = tried if shadow or rule.shadow else enforced
            target[rule_id(name, "deny", index)] = rbac_pb2.Policy(
                permissions=[deny_request_permission(rule.paths, rule.methods)],
                principals=[self._who(issuers, rule)],
            )
        grants = self._grants(issuers)
        deny = rbac_filter_pb2.RBAC(
            rules_stat_prefix=DENY_RBAC_PREFIX, shadow_rules_stat_prefix=DENY_RBAC_PREFIX
        )
        allow = rbac_filter_pb2.RBAC(
            rules_stat_prefix=ALLOW_RBAC_PREFIX, shadow_rules_stat_prefix=ALLOW_RBAC_PREFIX
        )
        grant_rules = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW, policies=grants)
        if shadow:
            allow.shadow_rules.CopyFrom(grant_rules)
        else:
            allow.rules.CopyFrom(grant_rules)
            deny.rules.CopyFrom(rbac_pb2.RBAC(action=rbac_pb2.RBAC.DENY, policies=enforced))
        if tried:
            deny.shadow_rules.CopyFrom(rbac_pb2.RBAC(action=rbac_pb2.RBAC.DENY, policies=tried))
        has_deny = deny.HasField("rules") or deny.HasField("shadow_rules")
        return PolicyRules(
            policy=name,
            mode=self.policy.mode,
            deny=rbac_filter_pb2.RBACPerRoute(rbac=deny) if has_deny else None,
            allow=rbac_filter_pb2.RBACPerRoute(rbac=allow),
        )

    def _issuers(self) -> list[Issuer]:
        out = []
        for name in self.policy.issuers:
            issuer = self.config.issuer(name)
            if issuer is None:
                raise PolicyError(f"policy {self.policy.name!r}: unknown issuer {name!r}")
            out.append(issuer)
        if not out:
            raise PolicyError(f"policy {self.policy.name!r} accepts no issuer")
        return out

    def _holders(self, issuers: Sequence[Issuer], role: str) -> rbac_pb2.Principal:
        """Callers holding ``role``: naming it, or a role that inherits it, in a role claim."""
        values: list[str] = []
        for heir in self.graph.heirs(role):
            values += [v for v in claim_values(self.graph.role(heir)) if v not in values]
        return holds_role(issuers, values)

    def _who(self, issuers: Sequence[Issuer], rule: Rule) -> rbac_pb2.Principal:
        """The callers a rule is about (any of its roles, subjects, or any verified caller)."""
        if rule.authenticated:
            return authenticated(issuers)
        ids = [self._holders(issuers, role) for role in rule.roles]
        if rule.subjects:
            ids.append(has_subject(issuers, rule.subjects))
        return any_id(ids)

    def _role_permission(self, role: str) -> rbac_pb2.Permission:
        """What ``role`` grants: its permissions with what it inherits."""
        permissions = self.graph.permissions(role)
        if not permissions:
            raise PolicyError(
                f"policy {self.policy.name!r}: role {role!r} has no permissions, of its own or "
                "inherited"
            )
        return any_of(
            [request_permission(p.paths, p.methods, self.ignore_case) for p in permissions]
        )

    def _grants(self, issuers: Sequence[Issuer]) -> dict[str, rbac_pb2.Policy]:
        name = self.policy.name
        grants: dict[str, rbac_pb2.Policy] = {}
        for role in self.policy.roles:
            grants[rule_id(name, "role", role)] = rbac_pb2.Policy(
                permissions=[self._role_permission(role)],
                principals=[self._holders(issuers, role)],
            )
        for index, rule in enumerate(self.policy.allow):
            if rule.shadow:
                raise PolicyError(f"policy {name!r}: allow rule {index} is in shadow")
            if rule.paths or not rule.roles:
                principals = [self._who(issuers, rule)]
                permission = request_permission(rule.paths, rule.methods, self.ignore_case)
                grants[rule_id(name, "allow", index)] = rbac_pb2.Policy(
                    permissions=[permission], principals=principals
                )
                continue
            # Roles without paths: each role's holders get what the role grants (narrowed to
            # the rule's methods); the rule's other callers may make any request.
            policies: list[rbac_pb2.Policy] = []
            narrow = [methods_permission(rule.methods)] if rule.methods else []
            for role in rule.roles:
                policies.append(
                    rbac_pb2.Policy(
                        permissions=[all_of([self._role_permission(role), *narrow])],
                        principals=[self._holders(issuers, role)],
                    )
                )
            if rule.subjects or rule.authenticated:
                others = rule.model_copy(update={"roles": []})
                policies.append(
                    rbac_pb2.Policy(
                        permissions=[all_of(narrow)], principals=[self._who(issuers, others)]
                    )
                )
            for part, policy in enumerate(policies):
                detail = f"{index}" if len(policies) == 1 else f"{index}.{part}"
                grants[rule_id(name, "allow", detail)] = policy
        if not self.policy.roles and not self.policy.allow:
            grants[f"{RULE_ID_PREFIX}{name}:authenticated"] = rbac_pb2.Policy(
                permissions=[rbac_pb2.Permission(any=True)], principals=[authenticated(issuers)]
            )
        return grants
