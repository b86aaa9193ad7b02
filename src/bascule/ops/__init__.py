"""Operations: what balancers, orchestrators and operators read of a running server.

The admin listener (``--admin-bind``) serves ``/livez``, ``/readyz``, ``/metrics`` and ``/status`` from the
master when there are workers and from the process otherwise, never mixed with app routes. The modules
here meet at :mod:`bascule.ops.contract`: the listener asks a :class:`~bascule.ops.contract.AdminSource`
for answers, and metrics are one :class:`~bascule.ops.contract.MetricsView` whichever process holds them.
"""
