"""Fetching the mirrors of the targets next in line while the workers are busy with earlier ones.

On a code host a target's change begins with a clone or fetch of its repository: round trips
during which its worker holds a slot of the campaign's `concurrency` and does nothing else. One
prefetch thread per run fetches the mirrors of the next few targets (at most `ahead` beyond the
last one a worker began) so that a worker finds its mirror fresh and reads the branches from it
(`RepoCache.resolve(..., fresh_for_s=FRESH_S)`) instead of waiting for the network.

It only moves work earlier: a failed prefetch is left for the worker to repeat and report, and
nothing is fetched that the run would not fetch anyway. Mirrors on this machine (the local
forge's paths) are not prefetched: their clone is local work with no waiting to hide.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from types import TracebackType

from resources import cancel
from resources.repo_cache import RepoCache

log = logging.getLogger(__name__)

# How long a prefetched mirror counts as fresh for its target's change: the branches it holds are
# at most this old when the change starts from them (the targets it was fetched for are at most
# `ahead` away, so in practice seconds). A campaign branch that moved since makes the push's
# lease fail, as it would after an API read at the same moment.
FRESH_S = 120.0


def worth_prefetching(clone_url: str) -> bool:
    """True for a repository reached over the network (https, ssh), not a path on this machine."""
    if clone_url.startswith("file://"):
        return False
    return "://" in clone_url or clone_url.startswith("git@")


class MirrorPrefetch:
    """A thread fetching the mirrors of `keys`, in order, staying at most `ahead` targets beyond
    the last one `begin` was called for. `clone_url_of(key)` says where a target's repository
    is (None: nothing to fetch)."""

    def __init__(
        self,
        keys: Sequence[str],
        clone_url_of: Callable[[str], str | None],
        cache: RepoCache,
        ahead: int,
    ) -> None:
        self._keys = list(keys)
        self._clone_url_of, self._cache, self._ahead = clone_url_of, cache, max(1, ahead)
        self._begun = 0
        self._stopping = False
        self._cond = threading.Condition()
        self._scope = cancel.CancelScope()
        self._thread = threading.Thread(target=self._loop, name="mirror-prefetch", daemon=True)

    def __enter__(self) -> MirrorPrefetch:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._scope.cancel()  # a fetch still under way is not waited for
        self._thread.join(timeout=10)

    def begin(self) -> None:
        """A worker began its next target: the window moves on by one."""
        with self._cond:
            self._begun += 1
            self._cond.notify_all()

    def _loop(self) -> None:
        with cancel.scope(self._scope):
            for index, key in enumerate(self._keys):
                with self._cond:
                    # The workers begin targets in order; the first `concurrency` start at once.
                    while not self._stopping and index >= self._begun + self._ahead:
                        self._cond.wait()
                    if self._stopping:
                        return
                    if index < self._begun:
                        continue  # a worker has it already (and fetches it itself)
                try:
                    url = self._clone_url_of(key)
                    if url and worth_prefetching(url):
                        self._cache.mirror(url, FRESH_S)  # targets may share a repository
                except Exception as exc:  # the worker fetches again and reports what fails
                    log.debug("prefetch of %s failed: %s", key, exc)
