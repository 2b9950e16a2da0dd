"""The ext_authz service: API keys, intrusion detection and the audit trail (issue 9).

Envoy asks it (HTTP by default, gRPC where configured) only on routes whose policy needs
dynamic state; everything Envoy can decide alone stays in Envoy's own filters.
"""
