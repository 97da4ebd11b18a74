"""Load levels: a fixed concurrency (closed loop) or Poisson arrivals at a rate (open loop),
each with its warm-up, filling a :class:`LevelRun` as requests finish, so that a run stopped
half-way still has what it measured."""

from __future__ import annotations

import random
import resource

import attrs
import trio

from ._config import Level
from ._load import PATHS, Session, run_request
from ._records import RequestRecord

__all__ = ["LevelRun", "run_level"]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@attrs.define(eq=False)
class LevelRun:
    """The requests of one level and its measured span, filled while the level runs.

    ``begin`` is set when the measured phase starts (after the warm-up), ``end`` when it is
    over, or when the run is stopped (:meth:`stop`)."""

    level: Level
    key: str
    label: str
    warmup: list[RequestRecord] = attrs.Factory(list)
    measured: list[RequestRecord] = attrs.Factory(list)
    begin: float | None = None
    end: float | None = None
    cpu_s: float = 0.0
    _cpu0: float = 0.0

    def start_measuring(self) -> None:
        self._cpu0 = _cpu()
        self.begin = trio.current_time()

    def stop(self, at: float | None = None) -> None:
        """End the measured span (now, or ``at``) if it began and has not ended."""
        if self.begin is not None and self.end is None:
            self.end = trio.current_time() if at is None else at
            self.cpu_s = _cpu() - self._cpu0

    @property
    def measuring_began(self) -> bool:
        return self.begin is not None


async def _closed_loop(
    session: Session,
    base_url: str,
    records: list[RequestRecord],
    level_key: str,
    users: int,
    phase: str,
    first: int,
    count: int | None,
    duration: float | None,
) -> None:
    deadline = None if duration is None else trio.current_time() + duration

    def next_record() -> RequestRecord | None:
        i = len(records)
        if count is not None and i >= count:
            return None
        if deadline is not None and trio.current_time() >= deadline:
            return None
        record = RequestRecord(index=first + i, path=PATHS[i % 2], phase=phase)
        records.append(record)
        return record

    async def user() -> None:
        while (record := next_record()) is not None:
            await run_request(session, base_url, record, level_key)

    async with trio.open_nursery() as nursery:
        for _ in range(users):
            nursery.start_soon(user)


async def _open_loop(
    session: Session,
    base_url: str,
    records: list[RequestRecord],
    level_key: str,
    rate: float,
    phase: str,
    first: int,
    count: int | None,
    duration: float | None,
) -> None:
    rng = random.Random(f"{session.config.seed}:{level_key}:{phase}")
    start = at = trio.current_time()
    async with trio.open_nursery() as nursery:
        while count is None or len(records) < count:
            if duration is not None and at - start >= duration:
                break
            await trio.sleep_until(at)
            i = len(records)
            record = RequestRecord(index=first + i, path=PATHS[i % 2], phase=phase, scheduled=at)
            records.append(record)
            nursery.start_soon(run_request, session, base_url, record, level_key)
            at += rng.expovariate(rate)


async def run_level(
    session: Session,
    base_url: str,
    run: LevelRun,
    *,
    count: int | None,
    duration: float | None,
    warmup: int,
) -> None:
    """Run ``run.level``: ``warmup`` requests (excluded), then the measured ones."""
    level = run.level

    async def phase(
        name: str, records: list[RequestRecord], first: int, n: int | None, seconds: float | None
    ) -> None:
        label = f"{run.label} warm-up" if name == "warmup" else run.label
        session.progress.begin(label, total=n, duration=seconds)
        try:
            if level.mode == "concurrency":
                users = int(level.value)
                await _closed_loop(
                    session, base_url, records, run.key, users, name, first, n, seconds
                )
            else:
                await _open_loop(
                    session, base_url, records, run.key, level.value, name, first, n, seconds
                )
        finally:
            session.progress.end()  # also when the run is stopped: the line is finished

    if warmup:
        await phase("warmup", run.warmup, 0, warmup, None)
        failed = [r.error for r in run.warmup if r.error is not None]
        if len(failed) == len(run.warmup):
            first = failed[0]
            session.progress.note(
                f"bench: every warm-up request of {run.label} failed ({first.label}: "
                f"{first.message}); the measured ones will likely fail too. Ctrl-C stops the "
                "run and writes what was measured."
            )
    run.start_measuring()
    await phase("measured", run.measured, warmup, count, duration)
    run.stop()
