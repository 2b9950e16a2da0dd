"""The top layer: the ``meshgate`` command, the ``up`` launcher and the demo upstream.

Nothing below this package imports it; it may import every service package.
"""
