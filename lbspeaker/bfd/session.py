"""One BFD session in asynchronous mode (RFC 5880 section 6): state machine and timers. Pure.

The caller owns the clock and the sockets: it hands received packets to ``receive``, asks ``due`` for
the packets to send now, calls ``expire`` when ``deadline`` has passed, and sleeps until ``deadline``.
Times are ``time.monotonic()`` seconds; intervals on the wire are microseconds.

Rules implemented (section numbers of RFC 5880):

- 6.8.1/6.8.6 state variables and reception: a valid packet updates the remote discriminator, state
  and intervals, restarts the detection timer, and drives Down -> Init -> Up, Up -> Down on a remote
  Down, anything -> Down on a remote AdminDown ("neighbor signaled session down").
- 6.8.4 detection time: the remote's detect multiplier times the larger of our Required Min RX and
  its Desired Min TX. Expiry takes an Init or Up session Down ("control detection time expired") and
  forgets the remote (discriminator 0, as 6.8.1 asks).
- 6.8.3 timers: while not Up we send no faster than once a second; the configured transmit rate
  applies once Up. A change of Desired Min TX or Required Min RX starts a Poll Sequence (P bit until
  a packet with F arrives); while it runs, a larger transmit interval and a smaller receive interval
  are not used yet, so neither side's detection time is ever shorter than the packets allow.
- 6.8.7 transmission: every interval is the larger of our Desired Min TX and the remote's Required
  Min RX, less a random 0-25 % (10-25 % with a detect multiplier of 1); nothing periodic while the
  remote asks for 0; a packet with F answers a packet with P at once; a passive session (6.1) sends
  nothing until the remote has spoken.
- 6.8.16 administrative down: ``shutdown`` keeps sending AdminDown for one detection time so the
  remote learns it was on purpose, then ``finished`` is true.

Not implemented: Demand mode and the Echo function (echo-mode is refused by the configuration
checks), authentication (none, as in MetalLB). The C bit is sent clear: the BFD process lives and dies
with the speaker, so a speaker restart shows as BFD Down (RFC 5882 4.3: the control plane is not
independent, and the router must not keep a node BFD reports down under graceful restart).
Cost: O(1) per packet and per timer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lbspeaker.bfd.packet import ControlPacket, Diag, State

SLOW_TX_US = 1_000_000  # 6.8.3: while not Up, Desired Min TX is at least one second


@dataclass(frozen=True)
class Timers:
    """What a session asks for: intervals in microseconds (MetalLB's profile fields are milliseconds)."""

    desired_min_tx: int = 300_000
    required_min_rx: int = 300_000
    detect_mult: int = 3
    passive: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.desired_min_tx < 1 << 32 or not 0 <= self.required_min_rx < 1 << 32:
            raise ValueError("BFD intervals must be positive and fit 32 bits of microseconds")
        if not 1 <= self.detect_mult <= 255:
            raise ValueError("BFD detect multiplier must be 1 to 255")


@dataclass(frozen=True)
class Transition:
    """A change of the local session state."""

    old: State
    new: State
    diag: Diag


class Session:
    """The local end of one BFD session (see the module docstring)."""

    def __init__(self, local_discr: int, timers: Timers, now: float, rng: random.Random | None = None) -> None:
        if not 0 < local_discr < 1 << 32:
            raise ValueError("local discriminator must be 1 .. 2**32-1")
        self.local_discr = local_discr
        self.timers = timers
        self._rng = rng or random.Random()
        self.state = State.DOWN
        self.local_diag = Diag.NONE
        self.since = now
        self.remote_state = State.DOWN
        self.remote_discr = 0
        self.remote_min_rx = 1  # 6.8.1: until the remote says otherwise
        self.remote_desired_min_tx = 0
        self.remote_detect_mult = 0
        # The values we advertise, and the ones in force while a Poll Sequence confirms a change.
        self.desired_min_tx = max(timers.desired_min_tx, SLOW_TX_US)
        self.required_min_rx = timers.required_min_rx
        self._tx_in_use = self.desired_min_tx
        self._rx_in_use = self.required_min_rx
        self.poll_active = False
        self._poll_again = False
        self._reply_final = False
        self._last_tx: float | None = None
        self._scheduled = 0  # the interval (µs) next_tx was computed with
        self.next_tx: float | None = None if timers.passive else now
        self.detect_deadline: float | None = None
        self._admin_until: float | None = None
        self.received = 0
        self.sent = 0

    # ---- inputs --------------------------------------------------------------------------------

    def receive(self, packet: ControlPacket, now: float) -> Transition | None:
        """A valid packet of this session arrived (6.8.6, after the checks ``packet.decode`` made)."""
        self.received += 1
        self.remote_discr = packet.my_discr
        self.remote_state = packet.state
        self.remote_min_rx = packet.required_min_rx
        self.remote_desired_min_tx = packet.desired_min_tx
        self.remote_detect_mult = packet.detect_mult
        if packet.final and self.poll_active:
            self._end_poll()
        self.detect_deadline = now + self.detection_time() / 1e6
        if packet.poll:
            self._reply_final = True
        self._reschedule(now)
        if self.state == State.ADMIN_DOWN:
            return None
        if packet.state == State.ADMIN_DOWN:
            if self.state != State.DOWN:
                return self._set_state(State.DOWN, Diag.NEIGHBOR_DOWN, now)
            return None
        if self.state == State.DOWN:
            if packet.state == State.DOWN:
                return self._set_state(State.INIT, Diag.NONE, now)
            if packet.state == State.INIT:
                return self._set_state(State.UP, Diag.NONE, now)
        elif self.state == State.INIT:
            if packet.state in (State.INIT, State.UP):
                return self._set_state(State.UP, Diag.NONE, now)
        elif packet.state == State.DOWN:  # Up
            return self._set_state(State.DOWN, Diag.NEIGHBOR_DOWN, now)
        return None

    def expire(self, now: float) -> Transition | None:
        """Call when ``now`` is past ``detect_deadline``: the remote went silent (6.8.4)."""
        if self.detect_deadline is None or now < self.detect_deadline:
            return None
        self.detect_deadline = None
        self.remote_discr = 0
        self.remote_state = State.DOWN
        self.remote_min_rx = 1
        self.remote_desired_min_tx = 0
        self.remote_detect_mult = 0
        self.poll_active = self._poll_again = False
        self._tx_in_use, self._rx_in_use = self.desired_min_tx, self.required_min_rx
        if self.timers.passive:
            self.next_tx = None  # 6.1: a passive end waits for the remote to speak again
        if self.state in (State.INIT, State.UP):
            return self._set_state(State.DOWN, Diag.DETECTION_TIME_EXPIRED, now)
        return None

    def reconfigure(self, timers: Timers, now: float) -> None:
        """New intervals, multiplier or passive flag; a Poll Sequence tells the remote (6.8.3)."""
        self.timers = timers
        if timers.passive and self.remote_discr == 0:
            self.next_tx = None
        elif self.next_tx is None and self.state != State.ADMIN_DOWN:
            self.next_tx = now
        self._set_intervals(now)

    def shutdown(self, now: float) -> Transition | None:
        """Go AdminDown (6.8.16): announce it for one detection time, then ``finished``."""
        if self.state == State.ADMIN_DOWN:
            return None
        self._admin_until = now + self.detection_time() / 1e6  # at least one packet, see ``due``
        self.detect_deadline = None
        self._reply_final = False
        self.next_tx = now
        return self._set_state(State.ADMIN_DOWN, Diag.ADMIN_DOWN, now)

    # ---- outputs -------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """An AdminDown session that has told the remote long enough and can be dropped."""
        return self._admin_until is not None and self.next_tx is None

    def deadline(self) -> float | None:
        """The next time something is due (a packet to send or the detection timer)."""
        if self._reply_final:
            return 0.0  # a Final answer goes out at once
        times = [t for t in (self.next_tx, self.detect_deadline) if t is not None]
        return min(times) if times else None

    def due(self, now: float) -> list[ControlPacket]:
        """The packets to send now: a Final answer to a Poll, and the periodic packet when its time came."""
        out: list[ControlPacket] = []
        if self._reply_final:
            self._reply_final = False
            out.append(self._packet(poll=False, final=True))
        if self.next_tx is not None and now >= self.next_tx:
            if self._may_transmit():
                out.append(self._packet(poll=self.poll_active, final=False))
                self._last_tx = now
                self._scheduled = self.tx_interval()
                self.next_tx = now + self._jittered(self._scheduled) / 1e6
            else:
                self.next_tx = now + SLOW_TX_US / 1e6  # look again later (the remote asks for nothing)
            if self._admin_until is not None and self.next_tx > self._admin_until:
                self.next_tx = None  # AdminDown told for long enough
        self.sent += len(out)
        return out

    def tx_interval(self) -> int:
        """Microseconds between our periodic packets before jitter (6.8.7)."""
        return max(self._tx_in_use, self.remote_min_rx)

    def detection_time(self) -> int:
        """Microseconds of silence after which the remote is declared down (6.8.4)."""
        return self.remote_detect_mult * max(self._rx_in_use, self.remote_desired_min_tx)

    # ---- internals -----------------------------------------------------------------------------

    def _may_transmit(self) -> bool:
        if self.state == State.ADMIN_DOWN:
            return True
        if self.remote_min_rx == 0:
            return False  # 6.8.7: the remote asks for no periodic packets
        return not (self.timers.passive and self.remote_discr == 0)

    def _packet(self, *, poll: bool, final: bool) -> ControlPacket:
        return ControlPacket(
            state=self.state,
            diag=self.local_diag,
            detect_mult=self.timers.detect_mult,
            my_discr=self.local_discr,
            your_discr=self.remote_discr,
            desired_min_tx=self.desired_min_tx,
            required_min_rx=self.required_min_rx,
            poll=poll,
            final=final,
        )

    def _jittered(self, interval: int) -> float:
        # 6.8.7: reduce each interval by 0-25 %; with a multiplier of 1 by 10-25 %.
        top = 0.9 if self.timers.detect_mult == 1 else 1.0
        return interval * self._rng.uniform(0.75, top)

    def _set_state(self, new: State, diag: Diag, now: float) -> Transition:
        old = self.state
        self.state = new
        self.local_diag = diag
        self.since = now
        if new != State.ADMIN_DOWN:
            self._set_intervals(now)
        return Transition(old=old, new=new, diag=diag)

    def _set_intervals(self, now: float) -> None:
        """Advertise the intervals the state and configuration call for; poll when they change."""
        up = self.state == State.UP
        tx = self.timers.desired_min_tx if up else max(self.timers.desired_min_tx, SLOW_TX_US)
        rx = self.timers.required_min_rx
        if (tx, rx) == (self.desired_min_tx, self.required_min_rx):
            return
        # 6.8.3: while Up, a longer transmit interval and a shorter receive interval wait for the
        # end of the Poll Sequence; the safe directions apply at once.
        if not up or tx < self._tx_in_use:
            self._tx_in_use = tx
        if not up or rx > self._rx_in_use:
            self._rx_in_use = rx
        self.desired_min_tx, self.required_min_rx = tx, rx
        if self.remote_discr == 0:
            self._tx_in_use, self._rx_in_use = tx, rx
            return
        if self.poll_active:
            self._poll_again = True
        else:
            self.poll_active = True
        self._reschedule(now)

    def _end_poll(self) -> None:
        self._tx_in_use, self._rx_in_use = self.desired_min_tx, self.required_min_rx
        self.poll_active = self._poll_again
        self._poll_again = False

    def _reschedule(self, now: float) -> None:
        """Bring the next periodic packet forward when the transmit interval became shorter."""
        if self.next_tx is None:
            if self.timers.passive and self.remote_discr != 0 and self._admin_until is None:
                self.next_tx = now  # 6.1: the remote spoke, a passive end may answer now
            return
        interval = self.tx_interval()
        if self._last_tx is None or interval >= self._scheduled:
            return  # a longer interval applies from the next packet on
        self._scheduled = interval
        self.next_tx = max(now, min(self.next_tx, self._last_tx + self._jittered(interval) / 1e6))
