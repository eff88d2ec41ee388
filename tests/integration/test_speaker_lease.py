"""The speaker's Lease against a real HTTP API server (or a real cluster through LBSPEAKER_TEST_KUBECONFIG):
boot numbers survive a release, writes are checked by resourceVersion, and in a two-member cluster a
peer's vote written into our Lease reaches us while a vote against a speaker still writing fails."""

from __future__ import annotations

from lbspeaker_testkit.kubeutil import rest_for

from lbspeaker.kube.rest import path_for
from lbspeaker.speaker.lease import STATE_ANNOTATION, LeaseKeeper, speaker_lease, state_text


def keeper(kubeconfig: str, namespace: str, node: str, votes: list[tuple[int, int]] | None = None,
           state: str = "1 serving") -> LeaseKeeper:
    def on_voted(boot: int, version: int) -> None:
        if votes is not None:
            votes.append((boot, version))

    return LeaseKeeper(rest_for(kubeconfig), namespace, node, annotations=lambda: {STATE_ANNOTATION: state},
                       on_voted_dead=on_voted)


def test_the_boot_number_grows_across_releases(kubeconfig: str, namespace: str) -> None:
    first = keeper(kubeconfig, namespace, "node-a")
    assert first.acquire() == 1
    first.stop(release=True)
    rest = rest_for(kubeconfig)
    released = rest.get(path_for("coordination.k8s.io/v1", "leases", namespace, "speaker-node-a"))
    view = speaker_lease(released)
    assert view is not None and view.left and view.holder is None and view.boot == 1
    second = keeper(kubeconfig, namespace, "node-a")
    assert second.acquire() == 2  # a restarted speaker is told apart from its earlier self
    second.stop(release=False)


def test_a_vote_written_into_our_lease_reaches_us_and_a_stale_one_fails(kubeconfig: str, namespace: str) -> None:
    votes: list[tuple[int, int]] = []
    ours = keeper(kubeconfig, namespace, "node-b", votes, state=state_text(4, True))
    peer = keeper(kubeconfig, namespace, "node-c")
    boot = ours.acquire()
    peer.acquire()
    rest = rest_for(kubeconfig)
    path = path_for("coordination.k8s.io/v1", "leases", namespace, "speaker-node-b")
    seen = rest.get(path)
    ok, _sent = ours.witness()  # we write: the copy the peer holds is now stale
    assert ok
    assert not peer.vote_dead(seen, boot, 4)  # optimistic concurrency: we are alive somewhere
    assert votes == []
    fresh = rest.get(path)
    assert peer.vote_dead(fresh, boot, 4)  # we stopped writing: the vote lands
    ok, _sent = ours.witness()
    assert not ok and votes == [(boot, 4)]  # our next write finds it, and we are told
    ours.stop(release=False)
    peer.stop(release=False)
