"""The Train page with a prompts dataset offers GRPO with its graders (an example string
check to edit) and sampling settings; a broken grader is shown with its field and the
page launches nothing."""

from __future__ import annotations

import json

from core import datasets, db
from core.clients.storage import make_blob_store
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.ui.conftest import text_of
from trainer.shared import methods


def _prompts(settings: Settings) -> None:
    rows = [
        {"messages": [{"role": "user", "content": f"What is {i} + {i}?"}], "answer": str(2 * i)}
        for i in range(6)
    ]
    path = settings.data_dir / "rft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with db.session_scope(settings) as s:
        ds, _ = datasets.add_dataset(LOCAL_ACTOR, s, make_blob_store(settings), path, "sums")
        assert ds.layout == "prompts"


def test_a_prompts_dataset_trains_with_grpo_and_its_graders(settings: Settings, open_page) -> None:
    _prompts(settings)
    at = open_page("train")
    assert not at.exception
    (method,) = [b for b in at.selectbox if b.key == "train.method"]
    assert method.options == ["GRPO: learn from graded samples"]
    (graders,) = [t for t in at.text_area if t.key == "train.graders"]
    assert json.loads(graders.value)[0]["reference"] == "{{item.answer}}"
    inputs = {n.key: n.value for n in at.number_input}
    for name in methods.info("grpo").grading_settings:  # the table's defaults
        assert inputs[f"train.{name}"] == methods.SETTINGS[name].default
    assert "cannot be used" not in text_of(at)

    graders.set_value(json.dumps([{"type": "string_check", "input": "x", "reference": "y"}]))
    at.run()
    assert "The graders cannot be used" in text_of(at) and "operation" in text_of(at)


def test_the_graders_are_tried_on_rows_before_launch(settings: Settings, open_page) -> None:
    _prompts(settings)
    at = open_page("train")
    at.text_area(key="train.grader_answers").input("4\nfour").run()
    at.text_input(key="train.grader_field").input("answer").run()
    at.button(key="train.try_graders").click().run()
    assert not at.exception and not at.error
    (table,) = at.dataframe
    rows = table.value.to_dict("records")
    # three rows, each with the two answers and its own reference as the answer
    assert [(r["row"], r["answer"]) for r in rows][:3] == [(1, "4"), (1, "four"), (1, "0")]
    by = {(r["row"], r["answer"]): r["score"] for r in rows}
    assert by[(3, "4")] == 1.0 and by[(3, "four")] == 0.0  # 2 + 2 is 4
    assert all(by[(k, str(2 * (k - 1)))] == 1.0 for k in (1, 2, 3))  # the reference scores 1
