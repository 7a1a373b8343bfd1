"""The run's mirror prefetch: the next targets' repositories fetched ahead of the workers, never
more than the window ahead, never one a worker already began, never a path on this machine."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from orchestrator_assets.stages.prefetch import MirrorPrefetch, worth_prefetching
from resources.repo_cache import RepoCache


class RecordingCache(RepoCache):
    """A repository cache that notes which mirrors were asked for instead of fetching them; a
    request for `hold` waits until `release` is set."""

    def __init__(self, root: Path, fail: str = "", hold: str = ""):
        super().__init__(root)
        self.asked: list[str] = []
        self.fail, self.hold = fail, hold
        self.release = threading.Event()

    def mirror(self, url: str, fresh_for_s: float = 0.0) -> Path:
        self.asked.append(url.removeprefix("https://host/"))
        if url.endswith(self.hold):
            self.release.wait(10)
        if url.endswith(self.fail):
            raise RuntimeError(f"{url}: unreachable")
        return self.path_for(url)


def asked(cache: RecordingCache, count: int) -> list[str]:
    """What the cache was asked for once `count` requests came in, after a moment in which any
    request beyond them would have arrived."""
    deadline = time.monotonic() + 5
    while len(cache.asked) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    return list(cache.asked)


def test_the_prefetch_stays_within_its_window_ahead_of_the_workers(tmp_path: Path):
    keys = [f"t{i}" for i in range(8)]
    cache = RecordingCache(tmp_path, hold="t0", fail="t4")
    with MirrorPrefetch(keys, lambda k: f"https://host/{k}", cache, ahead=2) as prefetch:
        assert asked(cache, 1) == ["t0"]  # still fetching t0 ...
        for _ in range(4):  # ... when workers take t0 to t3
            prefetch.begin()
        cache.release.set()
        # t1 to t3 are the workers' own; t4 failed (its worker fetches it again and reports),
        # which does not stop the prefetch; t6 is beyond the window (4 begun + 2).
        assert asked(cache, 3) == ["t0", "t4", "t5"]
        prefetch.begin()
        assert asked(cache, 4) == ["t0", "t4", "t5", "t6"]


def test_only_repositories_over_the_network_are_prefetched():
    assert worth_prefetching("https://github.com/acme/app.git")
    assert worth_prefetching("ssh://git@host/acme/app.git")
    assert worth_prefetching("git@github.com:acme/app.git")
    assert not worth_prefetching("/srv/repos/app.git")
    assert not worth_prefetching("file:///srv/repos/app.git")
