"""The circuit breaker in front of the exchange: when it opens, who it lets through, when it closes.

State changes are driven by a fake clock and ``wait_s=0`` (a caller that may not go out is
refused at once); the last tests use real threads and short real pauses to show that held-back
callers are released.
"""

from __future__ import annotations

import threading

import pytest

from workers.circuit_breaker import CircuitBreaker, DependencyUnavailableError

pytestmark = pytest.mark.unit


#: Seconds without an answer after which refusals open the breaker.
QUIET_S = 2.0


class Clock:
    """Monotonic seconds that move only when the test moves them."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(
    clock: Clock, *, failures_to_open: int = 4, first_pause_s: float = 1.0, longest_pause_s: float = 8.0
) -> CircuitBreaker:
    return CircuitBreaker(
        "exchange",
        failures_to_open=failures_to_open,
        quiet_s=QUIET_S,
        first_pause_s=first_pause_s,
        longest_pause_s=longest_pause_s,
        clock=clock,
    )


def call(subject: CircuitBreaker, *, fails: bool) -> None:
    """One call admitted without waiting, with its outcome reported."""
    with subject.admitted(0) as admitted:
        if fails:
            admitted.failed()
        else:
            admitted.succeeded()


def open_breaker(subject: CircuitBreaker, clock: Clock, failures: int = 4) -> None:
    """Refusals, and nothing else, for longer than the quiet time."""
    clock.now += QUIET_S
    for _ in range(failures):
        call(subject, fails=True)
    assert subject.is_open


def opened_breaker() -> tuple[Clock, CircuitBreaker]:
    """A breaker with default settings, just opened, and its clock."""
    clock = Clock()
    subject = breaker(clock)
    open_breaker(subject, clock)
    return clock, subject


def test_refusals_never_open_it_while_the_exchange_keeps_answering() -> None:
    clock = Clock()
    subject = breaker(clock)

    for number in range(5000):
        clock.now += 0.01
        call(subject, fails=number % 10 != 0)  # nine in ten refused; the tenth answers

    assert not subject.is_open


def test_a_burst_of_fast_refusals_before_the_first_slow_answer_does_not_open_it() -> None:
    # The exchange refuses at once and answers after 0.5 s: 512 calls in flight report about
    # 50 refusals before the first answer arrives.
    clock = Clock()
    subject = breaker(clock, failures_to_open=4)

    for _ in range(50):
        call(subject, fails=True)
    clock.now += 0.5
    call(subject, fails=False)

    assert not subject.is_open


def test_it_opens_once_enough_calls_failed_and_none_answered_for_the_quiet_time() -> None:
    clock = Clock()
    subject = breaker(clock, failures_to_open=4)
    call(subject, fails=False)

    for _ in range(10):
        call(subject, fails=True)
    assert not subject.is_open, "the last answer is too recent"
    clock.now += QUIET_S
    call(subject, fails=True)

    assert subject.is_open


def test_a_few_refusals_over_a_quiet_stretch_do_not_open_it() -> None:
    clock = Clock()
    subject = breaker(clock, failures_to_open=4)
    clock.now += 60.0

    for _ in range(3):
        call(subject, fails=True)

    assert not subject.is_open


def test_while_open_callers_are_held_back_until_they_give_up() -> None:
    _, subject = opened_breaker()

    with pytest.raises(DependencyUnavailableError, match="exchange unavailable"), subject.admitted(0):
        pytest.fail("a call went out while the breaker was open")


def test_after_the_pause_one_probe_goes_out_and_the_others_still_wait() -> None:
    clock, subject = opened_breaker()
    clock.now += 1.0

    with subject.admitted(0) as probe:
        assert probe.probe
        with pytest.raises(DependencyUnavailableError), subject.admitted(0):
            pytest.fail("a second call went out beside the probe")


def test_a_successful_probe_closes_it_for_everyone() -> None:
    clock, subject = opened_breaker()
    clock.now += 1.0

    call(subject, fails=False)

    assert not subject.is_open
    with subject.admitted(0) as admitted:
        assert not admitted.probe


def test_each_failed_probe_doubles_the_pause_up_to_the_longest() -> None:
    clock = Clock()
    subject = breaker(clock, first_pause_s=1.0, longest_pause_s=3.0)
    open_breaker(subject, clock)
    pauses = []
    for _ in range(3):
        waited = 0.0
        while True:
            try:
                call(subject, fails=True)
                break
            except DependencyUnavailableError:
                clock.now += 0.5
                waited += 0.5
        pauses.append(waited)

    assert pauses == [1.0, 2.0, 3.0]


def test_late_failures_of_calls_made_before_it_opened_do_not_lengthen_the_pause() -> None:
    clock = Clock()
    subject = breaker(clock)
    with subject.admitted(0) as late_one, subject.admitted(0) as late_two:
        open_breaker(subject, clock)
        late_one.failed()
        late_two.failed()
    clock.now += 1.0

    with subject.admitted(0) as probe:
        assert probe.probe


def test_a_late_success_closes_it_the_exchange_is_answering() -> None:
    clock = Clock()
    subject = breaker(clock)
    with subject.admitted(0) as late:
        open_breaker(subject, clock)
        late.succeeded()

    assert not subject.is_open


def test_a_probe_that_made_no_call_hands_the_probe_on() -> None:
    clock, subject = opened_breaker()
    clock.now += 1.0

    with subject.admitted(0) as first:
        assert first.probe  # ends without a call, as for an order found already placed
    with subject.admitted(0) as second:
        assert second.probe


def test_settings_that_make_no_sense_are_refused() -> None:
    with pytest.raises(ValueError, match="first_pause_s"):
        breaker(Clock(), first_pause_s=5.0, longest_pause_s=1.0)


def test_held_back_callers_go_out_together_once_the_probe_succeeds() -> None:
    subject = CircuitBreaker(
        "exchange", failures_to_open=4, quiet_s=0, first_pause_s=0.05, longest_pause_s=0.05
    )
    for _ in range(4):
        call(subject, fails=True)
    admitted: list[bool] = []
    lock = threading.Lock()

    def caller() -> None:
        with subject.admitted(5.0) as call_:
            with lock:
                admitted.append(call_.probe)
            if call_.probe:
                call_.succeeded()

    callers = [threading.Thread(target=caller) for _ in range(8)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(timeout=5.0)

    assert len(admitted) == 8
    assert admitted.count(True) == 1, "exactly one caller probed"
    assert not subject.is_open


def test_held_back_callers_give_up_after_their_wait_while_the_exchange_stays_down() -> None:
    subject = CircuitBreaker(
        "exchange", failures_to_open=4, quiet_s=0, first_pause_s=10.0, longest_pause_s=10.0
    )
    for _ in range(4):
        call(subject, fails=True)

    with pytest.raises(DependencyUnavailableError), subject.admitted(0.05):
        pytest.fail("a call went out while the breaker was open")


def test_it_reports_each_opening_and_closing_once_to_on_change() -> None:
    clock = Clock()
    changes: list[bool] = []
    subject = CircuitBreaker(
        "exchange",
        failures_to_open=4,
        quiet_s=QUIET_S,
        first_pause_s=1.0,
        longest_pause_s=8.0,
        clock=clock,
        on_change=changes.append,
    )

    open_breaker(subject, clock)
    clock.now += 1.0
    call(subject, fails=True)  # the probe fails: still open, nothing to report
    clock.now += 2.0
    call(subject, fails=False)

    assert changes == [True, False]


def test_an_on_change_that_raises_does_not_break_the_breaker() -> None:
    def broken(is_open: bool) -> None:
        raise RuntimeError("metrics are down")

    clock = Clock()
    subject = CircuitBreaker(
        "exchange",
        failures_to_open=4,
        quiet_s=QUIET_S,
        first_pause_s=1.0,
        longest_pause_s=8.0,
        clock=clock,
        on_change=broken,
    )

    open_breaker(subject, clock)
    clock.now += 1.0
    call(subject, fails=False)

    assert not subject.is_open
