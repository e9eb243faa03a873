"""Errors on pages are plain text: every `st.error` goes through `widgets.show_error`, which
escapes markdown, so a message carrying user data (a file name, a model's answer) shows
literally."""

from __future__ import annotations

import ast

from tests.conftest import ROOT


def test_every_error_on_a_page_goes_through_show_error() -> None:
    found = []
    for f in sorted(
        [*(ROOT / "app_pages").glob("*.py"), *(ROOT / "components").glob("*.py"), ROOT / "app.py"]
    ):
        tree = ast.parse(f.read_text())
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "error"
            ):
                inside = [fn.name for fn in functions if fn.lineno <= node.lineno <= fn.end_lineno]
                found.append((f.name, inside[-1] if inside else None))
    assert found == [("widgets.py", "show_error")], found


def test_show_error_renders_markdown_literally() -> None:
    from streamlit.testing.v1 import AppTest

    def page() -> None:
        from components import widgets as w

        w.show_error("bad row in **evil**_[link](http://x)_`code`")

    at = AppTest.from_function(page).run()
    assert at.error[0].value.replace("\\", "") == "bad row in **evil**_[link](http://x)_`code`"
    assert "\\*\\*evil\\*\\*" in at.error[0].value
