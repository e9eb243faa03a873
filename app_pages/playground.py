"""Playground: chat with your adapters, the base and up to three versions side by side
(e.g. base, SFT and DPO), all answering at once; compare on a set."""

import streamlit as st

from components import agent_chat, session
from components import chat as ui
from components import widgets as w
from core.clients import inference as inf
from core.errors import BrightRunError

st.title("Playground")
settings = session.settings()
actor = session.actor()
ui.init_state()
client = ui.inference_client(settings)

try:
    choice_set = inf.actor_choice_set(actor, settings, client)
except BrightRunError as e:
    w.show_error(e, stop=True)
choices = choice_set.available
by_label = {c.label: c for c in choices}

with st.sidebar:
    labels = st.multiselect(
        f"Models (one, or up to {ui.SIDE_BY_SIDE} side by side)",
        list(by_label),
        default=[c.label for c in choices[:2]],
        max_selections=ui.SIDE_BY_SIDE,
        key="playground.models",
    )
    if choice_set.unserved:
        with st.expander(
            f"Not listed: {len(choice_set.unserved)} adapter(s) whose base is not served"
        ):
            for u in choice_set.unserved:
                st.caption(f"**{w.plain(u.label)}**: {w.plain(u.reason)}")
    system = st.text_area("System prompt", key="playground.system")
    try:
        sampling = ui.sampling_controls()
    except BrightRunError as e:
        w.show_error(e, stop=True)

chosen = [by_label[label] for label in labels if label in by_label]
if not chosen:
    st.info("Choose a model in the sidebar: the base, one of your adapters, or several.")
    st.stop()
try:
    ui.ensure_ready(client, chosen, actor)
except BrightRunError as e:
    w.show_error(e, stop=True)
ui.demo_notice(chosen)  # the tiny demo model's random weights: why its answers are noise

chat_tab, set_tab, tools_tab = st.tabs(["Chat", "Compare on a set", "Tools"])

with chat_tab:
    turns = st.session_state["playground.turns"]
    ui.render_conversation(turns, chosen)
    prompt = st.chat_input("Ask the models…", key="playground.prompt")
    if prompt:
        ui.answer_turn(client, chosen, system, prompt, sampling)
    left, right = st.columns(2)
    if left.button("Clear conversation", key="playground.clear", disabled=not turns):
        st.session_state["playground.turns"] = []
        st.rerun()
    right.download_button(
        "Export JSONL",
        inf.export_conversation_jsonl(
            system,
            turns,
            [c.served_name for c in chosen],
            {c.served_name: c.label for c in chosen},
            {c.served_name: c.name for c in chosen},
        ),
        file_name="playground-conversation.jsonl",
        mime="application/jsonl",
        disabled=not turns,
        key="playground.export",
    )

with set_tab:
    pasted_label = "Pasted prompts"
    sources = ui.eval_sets(actor, settings)  # datasets with an eval split
    source = st.radio(
        "Prompts from",
        [pasted_label, *(f"Eval split of {n}" for n in sources)],
        horizontal=True,
        key="playground.set_source",
    )
    pasted = ""
    if source == pasted_label:
        pasted = st.text_area(
            "Prompts: one per line, `prompt<TAB>reference`, or JSON lines with prompt/reference",
            key="playground.set_text",
            height=160,
        )
    if st.button("Run the set", key="playground.run_set", type="primary"):
        try:
            if source == pasted_label:
                cases = inf.parse_prompt_set(pasted)
            else:
                cases = ui.eval_cases(
                    actor, settings, sources[source.removeprefix("Eval split of ")]
                )
            bar = st.progress(0.0, text=f"0 of {len(cases)}")
            rows = inf.compare_on_set(
                client,
                cases,
                [c.served_name for c in chosen],
                sampling,
                system,
                on_row=lambda i, _: bar.progress(
                    (i + 1) / len(cases), text=f"{i + 1} of {len(cases)}"
                ),
            )
            st.session_state["playground.set_rows"] = ui.set_rows(rows, chosen)
            st.session_state["playground.set_export"] = inf.export_set_jsonl(
                rows, {c.served_name: c.label for c in chosen}
            )
        except BrightRunError as e:
            w.show_error(e)
    if st.session_state["playground.set_rows"]:
        st.dataframe(st.session_state["playground.set_rows"], hide_index=True)
        st.download_button(
            "Export the answers (JSONL)",
            st.session_state["playground.set_export"],
            file_name="playground-set.jsonl",
            mime="application/jsonl",
            key="playground.export_set",
        )

with tools_tab:
    agent_chat.tools_tab(client, chosen, system, sampling, (actor, settings))
