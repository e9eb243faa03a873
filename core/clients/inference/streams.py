"""Several models answering at the same time.

`stream_together({name: open_stream})` starts one thread per model; each opens its stream
(`open_stream()`, e.g. `lambda: client.stream_chat(...)`) and feeds its pieces into one
queue, which the caller drains on its own thread: `Piece`s in the order they arrived, every
model's pieces in its own order, then one `done` piece per model (`error` set when its
stream raised a `BrightRunError`). A model's failure never stops the others. Anything else
a stream raises is raised again on the caller's thread, after the other streams are told to
stop. Closing the iterator early (the caller stopped) tells every stream to stop at its
next piece. No thread touches anything but its own stream and the queue, so the caller may
draw the pieces with a single-threaded UI (Streamlit's script thread).

`is_demo_model(name)`: whether a served base is BrightRun's tiny demo model, built on the
spot with random weights (`trainer.shared.tiny`): its answers are noise, not a bug.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from core.errors import BrightRunError
from core.planner.catalog import TINY_DIR_NAME, TINY_ID


@dataclass(frozen=True)
class Piece:
    model: str  # the key the stream was given under
    text: str = ""  # a piece of the answer ("" on the done piece)
    done: bool = False  # the model's stream has ended (or failed: `error`)
    error: BrightRunError | None = None


@dataclass(frozen=True)
class _Failure:
    error: BaseException


def stream_together(
    streams: Mapping[str, Callable[[], Iterable[str]]],
) -> Iterator[Piece]:
    """Run every stream at once; yield their pieces as they arrive (see the module)."""
    out: queue.Queue[Piece | _Failure] = queue.Queue()
    stop = threading.Event()
    threads = [
        threading.Thread(target=_feed, args=(name, open_, out, stop), daemon=True)
        for name, open_ in streams.items()
    ]
    for t in threads:
        t.start()
    running = len(threads)
    try:
        while running:
            item = out.get()
            if isinstance(item, _Failure):
                raise item.error
            running -= item.done
            yield item
    finally:
        stop.set()


def _feed(
    name: str,
    open_stream: Callable[[], Iterable[str]],
    out: queue.Queue[Piece | _Failure],
    stop: threading.Event,
) -> None:
    pieces: Iterator[str] | None = None
    try:
        pieces = iter(open_stream())
        for text in pieces:
            if stop.is_set():
                break
            out.put(Piece(name, text))
    except BrightRunError as e:
        out.put(Piece(name, done=True, error=e))
        return
    except BaseException as e:  # noqa: BLE001 - handed to the caller's thread, raised there
        out.put(_Failure(e))
        return
    finally:
        close = getattr(pieces, "close", None)
        if callable(close):
            close()
    out.put(Piece(name, done=True))


def is_demo_model(name: str) -> bool:
    """Whether served base `name` is the tiny demo model (random weights)."""
    return name == TINY_ID or PurePosixPath(name.replace("\\", "/").rstrip("/")).name == (
        TINY_DIR_NAME
    )
