"""The Train page with a KTO dataset: it names why the data cannot be trained and offers
no method to launch."""

from __future__ import annotations

import json

from core import datasets, db
from core.clients.storage import make_blob_store
from core.settings import Settings
from core.users import LOCAL_ACTOR
from tests.ui.conftest import text_of


def test_a_kto_dataset_is_refused_on_the_train_page_with_the_reason(
    settings: Settings, open_page
) -> None:
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
    assert "This dataset cannot be trained" in text_of(at)
    assert "no method trains KTO" in text_of(at)
    assert not [b for b in at.button if "Launch" in (b.label or "")]
    assert "train.method" not in at.session_state
