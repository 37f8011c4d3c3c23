"""Progress renderers against Docker's own formats (go-units, jsonmessage, streamformatter)."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.digest import Digest
from engine.errors import DaemonStreamError
from engine.progress.events import (
    Drawable,
    LayerProgress,
    LayerStatus,
    Message,
    ProgressEvent,
    PushCancelled,
    PushComplete,
    PushFailed,
    StreamedLayer,
    mounted,
    retrying,
)
from engine.progress.jsonstream import JsonRenderer, StreamDecoder, encode, messages_for
from engine.progress.plain import PlainRenderer
from engine.progress.render import (
    QuietRenderer,
    Renderer,
    human_size,
    make_renderer,
    progress_bar,
    render,
)
from engine.progress.summary import PushSummary, summary_in, summary_message
from engine.progress.tty import REDRAW_INTERVAL, TtyRenderer
from engine.progress.units import human_duration, progress_text


class Terminal(io.StringIO):
    """A StringIO that says it is a terminal, and remembers how much a reader has seen."""

    def __init__(self) -> None:
        super().__init__()
        self.flushed_upto = 0

    def isatty(self) -> bool:
        return True

    def flush(self) -> None:
        super().flush()
        self.flushed_upto = len(self.getvalue())


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


DIGEST = Digest.of(b'{"schemaVersion":2}')
PREPARING, WAITING, PUSHING = LayerStatus.PREPARING, LayerStatus.WAITING, LayerStatus.PUSHING
PUSHED, LAYER_EXISTS = LayerStatus.PUSHED, LayerStatus.EXISTS
#: Two layers' identities (what events carry), and the IDs Docker shows for them.
A = Digest.parse("sha256:0123456789ab" + "0" * 52)
B = Digest.parse("sha256:ba9876543210" + "f" * 52)
LAYER_A, LAYER_B = A.short, B.short
FIRST_LINE = "The push refers to repository [localhost:5000/demo]"


def a_push() -> list[ProgressEvent]:
    return [
        Message(FIRST_LINE),
        LayerProgress(A, PREPARING),
        LayerProgress(B, PREPARING),
        LayerProgress(B, WAITING),
        LayerProgress(A, PUSHING, 0, 2048),
        LayerProgress(A, PUSHING, 1024, 2048),
        retrying(A, 5),
        LayerProgress(A, PUSHING, 512, 2048),
        LayerProgress(A, PUSHING, 2048, 2048),
        LayerProgress(A, PUSHED),
        mounted(B, "library/base"),
        PushComplete("localhost:5000/demo", "latest", DIGEST, 528),
    ]


def feed(renderer: Renderer, events: list[ProgressEvent]) -> None:
    for event in events:
        renderer.handle(event)
    renderer.close()


# --- units: expected values from go-units size_test.go and jsonmessage_test.go ---


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (1000, "1kB"),
        (1024, "1.024kB"),
        (1_000_000, "1MB"),
        (1_048_576, "1.049MB"),
        (2_000_000, "2MB"),
        (3_420_000_000, "3.42GB"),
        (5_372_000_000_000, "5.372TB"),
        (2_220_000_000_000_000, "2.22PB"),
        (10_000_000_000_000 * 10**15, "1e+04YB"),
        (1, "1B"),
        (0, "0B"),
    ],
)
def test_human_size_matches_go_units(size: int, expected: str) -> None:
    assert human_size(size) == expected


@pytest.mark.parametrize(
    ("current", "total", "expected"),
    [
        (0, None, ""),
        (1, None, "      1B"),
        (50, 100, "[=========================>                         ]      50B/100B"),
        (50, 40, "[==================================================>]      50B"),
    ],
)
def test_progress_bar_matches_docker(current: int, total: int | None, expected: str) -> None:
    assert progress_bar(current, total) == expected


def test_progress_bar_moves_one_cell_per_two_percent() -> None:
    # 1.2 of 3.4 is 35.3 %: 17 cells filled, then the arrow, then the rest of the 50.
    bar = progress_bar(1_200_000, 3_400_000)
    assert bar == "[" + "=" * 17 + ">" + " " * 33 + "]    1.2MB/3.4MB"
    for current in (0, 1, 999, 1000):
        assert progress_bar(current, 1000).index("]") == 52


def test_narrow_terminal_progress_has_counts_only() -> None:
    # Docker's "short" rendering, for terminals of 110 columns or fewer.
    assert progress_text(50, 100, with_bar=False) == "     50B/100B"
    assert progress_text(50, 40, with_bar=False) == "     50B"


# --- plain ---


def test_plain_prints_one_line_per_state_change() -> None:
    out = io.StringIO()
    feed(PlainRenderer(out), a_push())
    assert out.getvalue().splitlines() == [
        FIRST_LINE,
        f"{LAYER_A}: Preparing",
        f"{LAYER_B}: Preparing",
        f"{LAYER_B}: Waiting",
        f"{LAYER_A}: Pushing",
        f"{LAYER_A}: Retrying in 5 seconds",
        f"{LAYER_A}: Pushing",
        f"{LAYER_A}: Pushed",
        f"{LAYER_B}: Mounted from library/base",
        f"latest: digest: {DIGEST} size: 528",
    ]


def test_plain_prints_nothing_for_failure() -> None:
    out = io.StringIO()
    feed(PlainRenderer(out), [PushFailed("denied: requested access to the resource is denied")])
    assert out.getvalue() == ""


def test_plain_reports_layers_afresh_after_a_message() -> None:
    # The second tag of an --all-tags push reports the same layer's state again.
    out = io.StringIO()
    events: list[ProgressEvent] = [
        LayerProgress(A, LAYER_EXISTS),
        PushComplete("localhost:5000/demo", "v1", DIGEST, 528),
        LayerProgress(A, LAYER_EXISTS),
    ]
    feed(PlainRenderer(out), events)
    assert out.getvalue().splitlines() == [
        f"{LAYER_A}: Layer already exists",
        f"v1: digest: {DIGEST} size: 528",
        f"{LAYER_A}: Layer already exists",
    ]


# --- json ---


def test_json_stream_lines_are_dockers() -> None:
    out = io.StringIO()
    events: list[ProgressEvent] = [
        Message(FIRST_LINE),
        LayerProgress(A, PREPARING),
        LayerProgress(A, PUSHING, 1024, 2048),
        LayerProgress(A, PUSHED),
        PushComplete("localhost:5000/demo", "latest", DIGEST, 528),
    ]
    feed(JsonRenderer(out), events)
    bar = "[=========================\\u003e                         ]  1.024kB/2.048kB"
    assert out.getvalue().split("\r\n") == [
        '{"status":"The push refers to repository [localhost:5000/demo]"}',
        f'{{"status":"Preparing","progressDetail":{{}},"id":"{LAYER_A}"}}',
        '{"status":"Pushing","progressDetail":{"current":1024,"total":2048},'
        f'"progress":"{bar}","id":"{LAYER_A}"}}',
        f'{{"status":"Pushed","progressDetail":{{}},"id":"{LAYER_A}"}}',
        f'{{"status":"latest: digest: {DIGEST} size: 528"}}',
        f'{{"progressDetail":{{}},"aux":{{"Tag":"latest","Digest":"{DIGEST}","Size":528}}}}',
        "",
    ]


def test_json_lines_parse_with_the_right_fields() -> None:
    out = io.StringIO()
    feed(JsonRenderer(out), a_push())
    messages = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(messages) == len(a_push()) + 1  # PushComplete is two objects
    pushing = messages[5]
    assert pushing["status"] == "Pushing"
    assert pushing["id"] == LAYER_A
    assert pushing["progressDetail"] == {"current": 1024, "total": 2048}
    assert pushing["progress"] == progress_bar(1024, 2048)
    assert messages[4]["progressDetail"] == {"total": 2048}  # Go omits a zero current
    assert messages[6]["status"] == "Retrying in 5 seconds"
    assert messages[-1]["aux"] == {"Tag": "latest", "Digest": str(DIGEST), "Size": 528}


def test_json_size_unknown_shows_count_only() -> None:
    out = io.StringIO()
    feed(JsonRenderer(out), [LayerProgress(A, PUSHING, 1_200_000, None)])
    message = json.loads(out.getvalue())
    assert message["progressDetail"] == {"current": 1_200_000}
    assert message["progress"] == "   1.2MB"


def test_json_failure_is_an_error_object() -> None:
    out = io.StringIO()
    feed(JsonRenderer(out), [PushFailed("unauthorized: <login> & retry")])
    escaped = "unauthorized: \\u003clogin\\u003e \\u0026 retry"
    assert out.getvalue() == f'{{"errorDetail":{{"message":"{escaped}"}},"error":"{escaped}"}}\r\n'
    message = json.loads(out.getvalue())
    assert message["errorDetail"]["message"] == "unauthorized: <login> & retry"
    assert message["error"] == message["errorDetail"]["message"]


def test_json_keeps_non_ascii_as_utf8_like_go() -> None:
    out = io.StringIO()
    feed(JsonRenderer(out), [Message("dépôt ☃")])
    assert out.getvalue() == '{"status":"dépôt ☃"}\r\n'


# --- tty ---


def test_tty_draws_a_new_layer_like_docker() -> None:
    # jsonmessage_test.go TestDisplayJSONMessagesStream, "With progressDetail", on a terminal.
    out = Terminal()
    feed(TtyRenderer(out), [LayerProgress(A, PUSHING, 1, None)])
    assert out.getvalue() == f"\n\x1b[1A\x1b[2K\r{LAYER_A}: Pushing       1B\r\x1b[1B"


def test_tty_redraws_lines_in_place() -> None:
    out = Terminal()
    events: list[ProgressEvent] = [
        Message(FIRST_LINE),
        LayerProgress(A, PREPARING),
        LayerProgress(B, PREPARING),
        LayerProgress(A, PUSHED),
        LayerProgress(B, LAYER_EXISTS),
        PushComplete("localhost:5000/demo", "latest", DIGEST, 528),
    ]
    feed(TtyRenderer(out, width=200), events)
    assert out.getvalue() == (
        f"{FIRST_LINE}\n"
        f"\n\x1b[1A\x1b[2K\r{LAYER_A}: Preparing \r\x1b[1B"
        f"\n\x1b[1A\x1b[2K\r{LAYER_B}: Preparing \r\x1b[1B"
        f"\x1b[2A\x1b[2K\r{LAYER_A}: Pushed \r\x1b[2B"
        f"\x1b[1A\x1b[2K\r{LAYER_B}: Layer already exists \r\x1b[1B"
        f"latest: digest: {DIGEST} size: 528\n"
    )


def test_tty_shows_bar_on_wide_terminals_only() -> None:
    wide, narrow = Terminal(), Terminal()
    event = LayerProgress(A, PUSHING, 1024, 2048)
    feed(TtyRenderer(wide, width=200), [event])
    feed(TtyRenderer(narrow, width=80), [event])
    assert f"{LAYER_A}: Pushing {progress_bar(1024, 2048)}\r" in wide.getvalue()
    assert f"{LAYER_A}: Pushing  1.024kB/2.048kB\r" in narrow.getvalue()


def test_tty_cuts_lines_that_would_wrap() -> None:
    out = Terminal()
    feed(TtyRenderer(out, width=20), [mounted(A, "library/base")])
    assert f"\r{LAYER_A}: Mount\r" in out.getvalue()


def test_tty_throttles_byte_updates_but_not_state_changes() -> None:
    out, clock = Terminal(), FakeClock()
    renderer = TtyRenderer(out, width=200, clock=clock)
    renderer.handle(LayerProgress(A, PUSHING, 100, 10_000))
    renderer.handle(LayerProgress(A, PUSHING, 200, 10_000))
    assert "200B" not in out.getvalue()  # too soon after the last draw
    clock.now += REDRAW_INTERVAL
    renderer.handle(LayerProgress(A, PUSHING, 300, 10_000))
    assert "300B/10kB" in out.getvalue()
    renderer.handle(LayerProgress(A, PUSHING, 400, 10_000))
    renderer.handle(LayerProgress(A, PUSHED))
    assert "400B" not in out.getvalue()
    assert out.getvalue().endswith(f"\x1b[1A\x1b[2K\r{LAYER_A}: Pushed \r\x1b[1B")


def test_tty_draws_a_finished_transfer_and_pending_updates_at_close() -> None:
    out, clock = Terminal(), FakeClock()
    renderer = TtyRenderer(out, width=200, clock=clock)
    renderer.handle(LayerProgress(A, PUSHING, 1, 4000))
    renderer.handle(LayerProgress(B, PUSHING, 1, 4000))
    renderer.handle(LayerProgress(A, PUSHING, 4000, 4000))
    renderer.handle(LayerProgress(B, PUSHING, 3000, 4000))
    assert "4kB/4kB" in out.getvalue()
    assert "3kB/4kB" not in out.getvalue()
    renderer.close()
    assert out.getvalue().endswith(
        f"\x1b[1A\x1b[2K\r{LAYER_B}: Pushing {progress_bar(3000, 4000)}\r\x1b[1B"
    )


def test_tty_prints_nothing_for_failure() -> None:
    out = Terminal()
    feed(TtyRenderer(out), [LayerProgress(A, PUSHING, 1, 2), PushFailed("boom")])
    assert "boom" not in out.getvalue()


@pytest.mark.parametrize("mode", ["tty", "plain", "json"])
def test_every_event_is_flushed_as_written(mode: str) -> None:
    out = Terminal()
    renderer = make_renderer(mode, out)
    for event in a_push():
        renderer.handle(event)
        assert out.flushed_upto == len(out.getvalue())
    assert len(out.getvalue()) > 0


# --- choosing a renderer, quiet ---


def test_make_renderer_picks_by_mode_and_terminal() -> None:
    assert isinstance(make_renderer("auto", Terminal()), TtyRenderer)
    assert isinstance(make_renderer("auto", io.StringIO()), PlainRenderer)
    assert isinstance(make_renderer("tty", io.StringIO()), TtyRenderer)
    assert isinstance(make_renderer("plain", Terminal()), PlainRenderer)
    assert isinstance(make_renderer("json", Terminal()), JsonRenderer)
    with pytest.raises(ValueError, match="fancy"):
        make_renderer("fancy", io.StringIO())


@pytest.mark.parametrize("mode", ["auto", "tty", "plain", "json"])
def test_quiet_prints_only_the_pushed_reference(mode: str) -> None:
    out = Terminal()
    renderer = make_renderer(mode, out, quiet=True)
    assert isinstance(renderer, QuietRenderer)
    feed(renderer, [*a_push(), PushFailed("boom")])
    assert out.getvalue() == f"localhost:5000/demo:latest@{DIGEST}\n"


# --- render() ---


class Recorder:
    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []
        self.closed = False

    def handle(self, event: ProgressEvent) -> None:
        self.events.append(event)

    def close(self) -> None:
        self.closed = True


@pytest.mark.anyio
async def test_render_draws_until_the_push_ends() -> None:
    queue: asyncio.Queue[ProgressEvent] = asyncio.Queue()
    events = a_push()
    for event in events:
        queue.put_nowait(event)
    queue.put_nowait(Message("after the end"))
    recorder = Recorder()
    await render(queue, recorder)
    assert recorder.events == events
    assert recorder.closed
    assert queue.qsize() == 1  # nothing read past the push's PushComplete


@pytest.mark.anyio
async def test_render_draws_until_every_push_of_a_batch_ends() -> None:
    queue: asyncio.Queue[ProgressEvent] = asyncio.Queue()
    events: list[ProgressEvent] = [
        Message(FIRST_LINE),
        PushFailed("boom", "localhost:5000/demo:v1"),
        LayerProgress(A, PREPARING),
        PushCancelled("localhost:5000/demo:v2"),
        PushComplete("localhost:5000/demo", "v3", DIGEST, 528),
    ]
    for event in events:
        queue.put_nowait(event)
    recorder = Recorder()
    await render(queue, recorder, pushes=2)
    assert recorder.events == events[:4]
    assert queue.qsize() == 1


@pytest.mark.anyio
async def test_render_waits_for_producers_and_marks_tasks_done() -> None:
    queue: asyncio.Queue[ProgressEvent] = asyncio.Queue()
    out = io.StringIO()
    task = asyncio.create_task(render(queue, PlainRenderer(out)))
    queue.put_nowait(Message(FIRST_LINE))
    await queue.join()
    assert out.getvalue() == f"{FIRST_LINE}\n"
    queue.put_nowait(PushCancelled("localhost:5000/demo"))
    await task
    await queue.join()


@pytest.mark.anyio
async def test_render_closes_the_renderer_when_cancelled() -> None:
    queue: asyncio.Queue[ProgressEvent] = asyncio.Queue()
    recorder = Recorder()
    task = asyncio.create_task(render(queue, recorder))
    queue.put_nowait(Message(FIRST_LINE))
    await queue.join()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert recorder.events == [Message(FIRST_LINE)]
    assert recorder.closed


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.5, "Less than a second"),
        (1, "1 second"),
        (45, "45 seconds"),
        (90, "About a minute"),
        (60 * 30, "30 minutes"),
        (60 * 70, "About an hour"),
        (60 * 90, "2 hours"),  # Docker rounds hours half up
        (3600 * 5, "5 hours"),
        (86400 * 3, "3 days"),
        (86400 * 20, "2 weeks"),
        (86400 * 90, "3 months"),
        (86400 * 365 * 3, "3 years"),
    ],
)
def test_human_duration_as_docker_says_it(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


# --- a daemon's stream read back (hoist push through hoist serve) ---


def streamed(events: list[ProgressEvent], *, repository: bool = False) -> list[Drawable]:
    """What ``hoist push`` draws when a daemon streamed ``events``: encoded, then decoded."""
    decoder = StreamDecoder()
    lines = [
        encode(message)
        for event in events
        for message in messages_for(event, repository=repository)
    ]
    decoded = [decoder.decode(json.loads(line)) for line in lines]
    return [event for event in decoded if event is not None]


@pytest.mark.parametrize("mode", ["plain", "json", "tty", "quiet"])
def test_a_push_read_back_from_its_stream_draws_the_same(mode: str) -> None:
    def drawn(events: list[Drawable]) -> str:
        out = Terminal()
        if mode == "tty":
            renderer: Renderer = TtyRenderer(out, width=120, clock=FakeClock())
        else:
            renderer = make_renderer(
                "plain" if mode == "quiet" else mode, out, quiet=mode == "quiet"
            )
        for event in events:
            renderer.handle(event)
        renderer.close()
        return out.getvalue()

    here = drawn(list(a_push()))
    assert here
    assert drawn(streamed(a_push())) == here


def test_the_stream_carries_layers_by_dockers_id_and_words() -> None:
    layers = [event for event in streamed(a_push()) if isinstance(event, StreamedLayer)]
    assert {layer.id for layer in layers} == {LAYER_A, LAYER_B}
    assert [layer.status for layer in layers if layer.id == LAYER_B] == [
        PREPARING,
        WAITING,
        LayerStatus.MOUNTED,
    ]
    assert StreamedLayer(LAYER_A, "Retrying in 5 seconds").status is LayerStatus.RETRYING
    assert StreamedLayer(LAYER_A, "Extracting").status is None


def test_the_streams_result_and_failure_come_back_whole() -> None:
    complete = PushComplete("localhost:5000/demo", "latest", DIGEST, 528)
    assert streamed([Message(FIRST_LINE), complete]) == [Message(FIRST_LINE), complete]
    assert streamed([PushFailed("denied: no")]) == [PushFailed("denied: no")]


def test_a_batchs_interleaved_results_name_their_repositories() -> None:
    """Several pushes in one stream: the last "refers to" line is not each result's."""
    first = PushComplete("localhost:5000/one", "v1", DIGEST, 528)
    second = PushComplete("localhost:5000/two", "v1", DIGEST, 528)
    lines = [Message(f"The push refers to repository [{first.repository}]")]
    lines.append(Message(f"The push refers to repository [{second.repository}]"))
    assert streamed([*lines, first, second], repository=True) == [*lines, first, second]
    # Docker's own result does not name it: the latest first line does.
    assert streamed([*lines, first])[-1] == PushComplete(
        second.repository, first.tag, first.digest, first.size
    )


@pytest.mark.parametrize(
    "message",
    [["a list"], {"aux": {"Tag": "v1"}}, {"aux": {"Tag": "v1", "Digest": "sha256:zz", "Size": 1}}],
)
def test_a_stream_hoist_cannot_read_is_one_error(message: object) -> None:
    with pytest.raises(DaemonStreamError, match="the daemon sent"):
        StreamDecoder().decode(message)


# --- a batch's summary (the table after ``hoist push A B …``, and its wire form) ---


@given(
    st.text(max_size=30),
    st.one_of(
        st.tuples(st.text(max_size=80), *[st.integers(0, 2**53)] * 4),
        st.text(max_size=80),
    ),
)
def test_a_summary_row_round_trips_through_the_daemons_stream(
    ref: str, outcome: tuple[str, int, int, int, int] | str
) -> None:
    row = (
        PushSummary(ref, error=outcome) if isinstance(outcome, str) else PushSummary(ref, *outcome)
    )
    message = json.loads(encode(summary_message([row, row])))
    assert summary_in(message) == [row, row]


def test_a_summary_row_as_the_table_shows_it() -> None:
    assert PushSummary("h/a:v1", str(DIGEST), 1, 2, 3, 1536).row() == (
        "h/a:v1",
        str(DIGEST)[:19],
        "1",
        "2",
        "3",
        "1.536kB",
    )
    assert PushSummary("h/b:v1", error="denied").row() == ("h/b:v1", "failed", "", "", "", "")


@pytest.mark.parametrize(
    "message",
    [
        {"aux": {"Summary": "rows"}},
        {"aux": {"Summary": [{"Digest": "sha256:x"}]}},
        {"aux": {"Summary": [{"Ref": "a", "Digest": "d", "Pushed": -1}]}},
        {"aux": {"Summary": [{"Ref": "a", "Digest": "d", "Pushed": True}]}},
        {"aux": {"Summary": [{"Ref": "a", "Pushed": 1, "Mounted": 0, "Exists": 0, "Sent": 0}]}},
    ],
)
def test_a_summary_hoist_cannot_read_is_one_error(message: object) -> None:
    with pytest.raises(DaemonStreamError, match="the daemon sent a batch summary"):
        summary_in(message)


def test_other_messages_are_no_summary() -> None:
    complete = PushComplete("localhost:5000/demo", "latest", DIGEST, 528)
    for message in [*messages_for(complete), {"status": "x"}, ["a"], {"aux": None}]:
        assert summary_in(message) is None
