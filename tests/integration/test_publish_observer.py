"""The confirmed publisher tells its observer how each publish ended, against the real broker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orders_api.adapters.rabbitmq.confirmed_publisher import ConfirmedPublisher, OutgoingMessage, PublishError
from orders_api.adapters.rabbitmq.placement_queue import queue_declarations
from orders_api.settings.shared import Settings

pytestmark = pytest.mark.integration


class Recorder:
    """A publish observer that keeps what it was told."""

    def __init__(self) -> None:
        self.confirmed_after: list[float] = []
        self.failed_messages: list[int] = []

    def confirmed(self, seconds: float) -> None:
        self.confirmed_after.append(seconds)

    def failed(self, messages: int) -> None:
        self.failed_messages.append(messages)


@pytest.fixture
def observed(settings: Settings) -> Iterator[tuple[ConfirmedPublisher, Recorder]]:
    recorder = Recorder()
    publisher = ConfirmedPublisher(
        settings.rabbitmq_url,
        queue_declarations(settings.placement_queue),
        connect_timeout_s=settings.connect_timeout_s,
        confirm_timeout_s=settings.confirm_timeout_s,
        observer=recorder,
    )
    yield publisher, recorder
    publisher.close()


def test_a_confirmed_batch_is_reported_once_with_its_wait(
    observed: tuple[ConfirmedPublisher, Recorder], settings: Settings
) -> None:
    publisher, recorder = observed

    publisher.publish_all(
        [OutgoingMessage(settings.placement_queue, b"{}", f"message-{number}") for number in range(3)]
    )

    assert len(recorder.confirmed_after) == 1
    assert 0 < recorder.confirmed_after[0] < settings.confirm_timeout_s
    assert recorder.failed_messages == []


def test_an_unroutable_publish_is_reported_as_failed_with_its_message_count(
    observed: tuple[ConfirmedPublisher, Recorder], settings: Settings
) -> None:
    publisher, recorder = observed

    with pytest.raises(PublishError, match="could not route"):
        publisher.publish_all(
            [OutgoingMessage(f"{settings.placement_queue}.nowhere", b"{}", f"message-{n}") for n in range(2)]
        )

    assert recorder.failed_messages == [2]
    assert recorder.confirmed_after == []
