"""Test doubles for the timing harness: a fake clock and runners that advance it by scripted durations."""


class FakeClock:
    def __init__(self):
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


class ScriptedRunner:
    """Each run advances the clock by the next scripted duration (ms, cycling); `fail` makes every run raise."""

    def __init__(self, clock: FakeClock, durations_ms, fail: bool = False):
        self.clock, self.durations_ms, self.fail, self.runs = clock, list(durations_ms), fail, 0

    def run(self) -> None:
        if self.fail:
            raise RuntimeError("device fault")
        self.clock.now_s += self.durations_ms[self.runs % len(self.durations_ms)] / 1e3
        self.runs += 1

    def device_times_ms(self, repeats):
        return None
