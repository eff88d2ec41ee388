"""lbspeaker: LoadBalancer Services for bare-metal Kubernetes.

The package holds the speaker and everything the controller and the speaker share:
configuration, address sets, the Kubernetes layer, membership, election, L2 and BGP.
"""

__version__ = "0.1.0"
