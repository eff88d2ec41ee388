"""The speaker: the program a DaemonSet runs on every node to announce the external IPs.

``main`` is the process (flags, signals, wiring), ``app`` the speaker itself (caches, membership,
reconcile); ``layer2`` and ``bgp`` compute and apply what this node announces for each protocol,
``eligibility`` holds every rule of who may announce, ``lease`` the speaker Lease schema.
"""
