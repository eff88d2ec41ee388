"""Every tunable of the speaker in one place, with its default (the flags of ``speaker.main`` fill it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lbspeaker.membership.detector import Timing


@dataclass(frozen=True)
class SpeakerSettings:
    namespace: str = "lbspeaker-system"  # config, Leases, Secrets
    config_name: str = "config"
    lb_class: str | None = None
    interfaces_regex: str | None = None
    heartbeat_bind: tuple[str, int] = ("", 7946)
    timing: Timing = field(default_factory=Timing)  # membership: heartbeat interval, dead-after
    lease_renew: float = 10.0  # seconds between renewals of our Lease (kubelet's node Leases: 10 s)
    lease_duration: int = 40  # a Lease unrenewed this long has expired (4 renewals)

    def __post_init__(self) -> None:
        if not 0 < self.lease_renew < self.lease_duration:
            raise ValueError("the lease renew interval must be positive and below the lease duration")
