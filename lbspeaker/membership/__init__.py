"""Membership: which layer2 speakers are alive, by partial monitoring over UDP (knows nothing of Kubernetes).

``ring`` says who watches whom, ``wire`` is the datagram format, ``detector`` the pure state machine
(votes, verdicts, fencing), ``transport`` runs a detector on a real socket. The speaker feeds the
member list from the speakers' Leases and acts on ``Detector.alive()`` and ``Detector.answering``.
"""
