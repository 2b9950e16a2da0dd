"""A few CEL expressions as parsed ASTs, for the Envoy fields that take no CEL text.

Envoy 1.40's RBAC ``Policy.condition`` wants a parsed ``google.api.expr.v1alpha1.Expr`` (and its
CEL matcher refuses ``cel_expr_string``); no Python library here produces that AST from text.
The compiler needs only a handful of shapes (metadata lookups, comparisons, ``&&``/``||``), so
:class:`Cel` builds them directly. Node ids only have to be unique within one expression; one
builder per expression numbers them in order, so the output is deterministic.

Function names are CEL's operator overloads (``_&&_``, ``_>_``, ``@in``, ``_[_]``), as the
CEL spec's ``operators`` list names them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from google.api.expr.v1alpha1.syntax_pb2 import Expr

__all__ = ["Cel", "Expr"]


class Cel:
    """Builds the nodes of one expression."""

    def __init__(self) -> None:
        self._ids: Iterator[int] = itertools.count(1)

    def _node(self) -> Expr:
        return Expr(id=next(self._ids))

    def ident(self, name: str) -> Expr:
        node = self._node()
        node.ident_expr.name = name
        return node

    def string(self, value: str) -> Expr:
        node = self._node()
        node.const_expr.string_value = value
        return node

    def int(self, value: int) -> Expr:
        node = self._node()
        node.const_expr.int64_value = value
        return node

    def select(self, operand: Expr, field: str) -> Expr:
        node = self._node()
        node.select_expr.operand.CopyFrom(operand)
        node.select_expr.field = field
        return node

    def call(self, function: str, *args: Expr) -> Expr:
        node = self._node()
        node.call_expr.function = function
        node.call_expr.args.extend(args)
        return node

    def method(self, target: Expr, function: str, *args: Expr) -> Expr:
        """``target.function(args)`` (a receiver-style call, such as ``s.matches(re)``)."""
        node = self.call(function, *args)
        node.call_expr.target.CopyFrom(target)
        return node

    # --- operators ---------------------------------------------------------------------------

    def index(self, operand: Expr, key: str) -> Expr:
        """``operand['key']``"""
        return self.call("_[_]", operand, self.string(key))

    def has_key(self, operand: Expr, key: str) -> Expr:
        """``'key' in operand`` (a map)"""
        return self.call("@in", self.string(key), operand)

    def all_of(self, *terms: Expr) -> Expr:
        """``a && b && ...``"""
        out = terms[0]
        for term in terms[1:]:
            out = self.call("_&&_", out, term)
        return out

    def any_of(self, *terms: Expr) -> Expr:
        """``a || b || ...``"""
        out = terms[0]
        for term in terms[1:]:
            out = self.call("_||_", out, term)
        return out

    def greater(self, left: Expr, right: Expr) -> Expr:
        return self.call("_>_", left, right)

    def plus(self, left: Expr, right: Expr) -> Expr:
        return self.call("_+_", left, right)

    # --- Envoy attributes --------------------------------------------------------------------

    def dynamic_metadata(self, namespace: str) -> Expr:
        """``metadata.filter_metadata['namespace']``"""
        return self.index(self.select(self.ident("metadata"), "filter_metadata"), namespace)

    def has_metadata(self, namespace: str, key: str) -> Expr:
        """The namespace exists and holds ``key`` (guards every lookup below it)."""
        filter_metadata = self.select(self.ident("metadata"), "filter_metadata")
        return self.all_of(
            self.has_key(filter_metadata, namespace),
            self.has_key(self.dynamic_metadata(namespace), key),
        )

    def request_header(self, name: str) -> tuple[Expr, Expr]:
        """``'name' in request.headers`` and ``request.headers['name']``: every value of the
        header, joined with ',' (a guard and the lookup it guards)."""
        headers = self.select(self.ident("request"), "headers")
        present = self.has_key(headers, name)
        value = self.index(self.select(self.ident("request"), "headers"), name)
        return present, value

    def now_seconds(self) -> Expr:
        """``int(request.time)``: the request's arrival, in whole seconds since the epoch."""
        return self.call("int", self.select(self.ident("request"), "time"))
