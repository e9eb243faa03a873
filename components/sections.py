"""Page sections that fail on their own: `section(what)`.

Contract. Code run inside `with section("the preview"):` (or a function decorated with
`@section("...")`, fragments included) can raise, and the page goes on:

- a `BrightRunError` (an error raised on purpose, with a message meant for the user) is
  shown as plain text through `widgets.show_error`;
- any other exception is a bug: the user sees one short line naming the section and an
  error id (`error 3f9c1a2b`), never the exception's text, a traceback, a file path or
  Streamlit's own exception box; the full traceback goes to the `brightrun.pages` logger
  at ERROR with the same id, so a report quoting the id finds it;
- Streamlit's own control flow (`st.stop`, `st.rerun`, `st.switch_page`) is a
  `BaseException`, not an `Exception`, and passes through untouched.

`app.py` runs every page inside one `section`, so an error no section caught still shows
the short line; pages put their independent parts (tabs, live fragments) in their own, so
one broken part leaves the rest working. `client.showErrorDetails = "none"` in
`.streamlit/config.toml` is the last line: whatever escapes shows Streamlit's generic
message, never details.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from components.widgets import show_error
from core.errors import BrightRunError

LOGGER = "brightrun.pages"
log = logging.getLogger(LOGGER)


def failure_message(what: str, error_id: str) -> str:
    """What the user reads when `what` failed unexpectedly."""
    return (
        f"Could not show {what} (error {error_id}). The rest of the page still works; "
        "the details are in the server log under that error id."
    )


@contextmanager
def section(what: str) -> Iterator[None]:
    """Run a part of a page; an error in it is shown as one line there (see the module)."""
    try:
        yield
    except BrightRunError as e:
        show_error(e)
    except Exception:
        error_id = uuid.uuid4().hex[:8]
        log.exception("page section %r failed (error %s)", what, error_id)
        show_error(failure_message(what, error_id))
