"""The Train page with a KTO dataset offers method kto only, with its settings (beta and
the two weights) at the table's defaults."""

from __future__ import annotations

import json

from core import datasets, db
from core.clients.storage import make_blob_store
from core.settings import Settings
from core.users import LOCAL_ACTOR
from trainer.shared.methods import SETTINGS


def test_a_kto_dataset_trains_with_kto_on_the_train_page(settings: Settings, open_page) -> None:
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        | {"label": i % 2 == 0}
        for i in range(6)
    ]
    path = settings.data_dir / "kto.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with db.session_scope(settings) as s:
        ds, _ = datasets.add_dataset(LOCAL_ACTOR, s, make_blob_store(settings), path, "labelled")
        assert ds.layout == "kto"
    at = open_page("train")
    assert not at.exception
    (method,) = [b for b in at.selectbox if b.key == "train.method"]
    assert method.options == ["KTO: good and bad answers, unpaired"]
    inputs = {n.key: n.value for n in at.number_input}
    for name in ("beta", "desirable_weight", "undesirable_weight"):
        assert inputs[f"train.{name}"] == SETTINGS[name].default
    assert "train.orpo_lambda" not in inputs
