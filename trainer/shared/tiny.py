"""A tiny chat model built on the spot, for tests and the local demo.

`build_tiny_chat_model(out_dir, seed)` writes a folder that loads with
`AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained`, exactly like a
real Qwen checkpoint: a randomly initialised Qwen2-architecture model and a byte-level BPE
tokenizer trained in a fraction of a second on a small built-in corpus, with Qwen's ChatML
special tokens (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>` as padding) and a ChatML
chat template whose assistant turns are wrapped in `{% generation %}` markers (so
`apply_chat_template(..., return_assistant_tokens_mask=True)` works too).

Byte-level BPE encodes any text (no unknown tokens), so any dataset can be used with it.
The same seed gives byte-identical files; nothing is downloaded. Command line:

    python -m trainer.shared.tiny OUT_DIR [--seed 0] [--hidden-size 64] [--layers 2]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|endoftext|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END]

# Qwen-style ChatML without the default system prompt. The assistant's content and its
# closing <|im_end|> are inside {% generation %}: those are the tokens that carry loss.
# Like Qwen3's template it renders `tools` (function schemas in the system turn), an
# assistant's `reasoning_content` as a <think> block, its `tool_calls` as <tool_call> JSON,
# and tool results as <tool_response> blocks in a user turn; `enable_thinking=false` opens
# the answer with an empty <think> block. Plain chat renders as plain ChatML.
_TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_FORMAT = (
    "\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- '" + _TOOLS_PREAMBLE.replace("\n", "\\n") + "' }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '" + _TOOLS_FORMAT.replace("\n", "\\n") + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' and tools and loop.first %}"
    "{%- elif message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{% generation %}"
    "{%- if message.get('reasoning_content') %}"
    "{{- '<think>\\n' + message['reasoning_content'] + '\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{{- message['content'] or '' }}"
    "{%- for call in message.get('tool_calls') or [] %}"
    "{%- set fn = call['function'] if call.get('function') else call %}"
    "{%- if message['content'] or not loop.first %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": \"' + fn['name'] + '\", \"arguments\": ' }}"
    "{%- if fn['arguments'] is string %}{{- fn['arguments'] }}"
    "{%- else %}{{- fn['arguments'] | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>' }}{% endgeneration %}"
    "{{- '\\n' }}"
    "{%- elif message['role'] == 'tool' %}"
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}"
    "{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)

_CORPUS = """
You are a helpful assistant. The user asks a question and the assistant answers it.
What is the capital of France? The capital of France is Paris.
What is the color of the sky? The sky is blue on a clear day.
How many legs does a spider have? A spider has eight legs.
Please summarise the following text in one sentence.
Translate the sentence into French: the cat sleeps on the warm mat.
Write a short poem about the sea, the wind and the stars at night.
The quick brown fox jumps over the lazy dog while the cat watches.
A model adapter has a rank and an alpha; the learning rate sets the step size.
Training loss goes down as the model learns; evaluation loss tells us if it generalises.
The worker downloads the dataset, trains the adapter, uploads it and reports the cost.
Tokens are grouped into batches; packing puts several samples into one row.
Memory, speed, budget, queue, cache, checkpoint, resume, upload, download, serve, chat.
The answer is yes. The answer is no. Maybe. I do not know. Thank you! You are welcome.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 42 100 256 1000 2024 3.14 0.5 -1 +1 = % $ # @ &
Code: def main(): return {"key": [1, 2, 3]} if x > 0 else None  # comment
Questions: who, what, when, where, why, how? Answers: because, therefore, so, then.
Days: Monday Tuesday Wednesday Thursday Friday Saturday Sunday. Months: January June.
Colors: red orange yellow green blue indigo violet black white grey brown pink purple.
Animals: cat dog bird fish horse cow sheep goat lion tiger bear wolf fox rabbit mouse.
Fruit: apple banana cherry grape lemon mango orange peach pear plum strawberry melon.
model adapter rank alpha token batch layer weight gradient loss epoch step data train
eval prompt answer user system memory speed cost budget volume worker queue cache
checkpoint resume upload download serve chat base merge quant nf4 bf16 the a of to in
and is for on with as by at from that this it be are was were will would can could
Science: atoms, molecules, energy, light, gravity, planets, orbit, moon, sun, earth, water.
Places: London Paris Berlin Madrid Rome Tokyo Beijing Delhi Cairo Lagos Lima Sydney Oslo.
People walk, run, read, write, speak, listen, think, learn, teach, build, cook, sing, play.
Feelings: happy, sad, angry, calm, tired, curious, proud, afraid, surprised, grateful.
Kitchen: bread, butter, cheese, milk, eggs, rice, pasta, soup, salad, sugar, salt, pepper.
Weather: sunny, cloudy, rainy, windy, snowy, stormy, foggy, warm, cold, hot, freezing.
Tools: hammer, saw, drill, wrench, screwdriver, pliers, ladder, brush, bucket, rope, nail.
Office: meeting, email, report, deadline, project, manager, team, schedule, invoice, desk.
Sports: football, tennis, swimming, running, cycling, skiing, golf, boxing, chess, rowing.
""".strip()


def _train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = _CORPUS.splitlines()
    # Repeat the corpus so frequent words become whole tokens; deterministic order.
    tok.train_from_iterator(lines * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token=IM_END,
        pad_token=PAD,
        unk_token=None,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATE,
        model_max_length=32768,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )


def build_tiny_chat_model(
    out_dir: str | Path,
    seed: int = 0,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 1024,
    intermediate_size: int | None = None,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_position_embeddings: int = 4096,
    tie_word_embeddings: bool = True,
    dtype: str = "float32",
    initializer_range: float = 0.15,
) -> Path:
    """Write a random Qwen2 chat model + trained tokenizer to `out_dir`; return the folder.

    `vocab_size` is the BPE target; the model's embedding matches the trained tokenizer's
    length. `dtype` is the stored weights' dtype ("bfloat16" like published checkpoints).
    `initializer_range` defaults wider than transformers' 0.02 so that a tiny model's
    logits are not flat and a toy task is learnt in a few dozen steps; wide models (hidden
    1024 and up) want the usual 0.02. Deterministic for a given seed and arguments.
    """
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
    if num_heads % num_kv_heads:
        raise ValueError(f"num_heads {num_heads} must be divisible by num_kv_heads {num_kv_heads}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = _train_tokenizer(vocab_size)
    config = _qwen2_config(
        tokenizer,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        initializer_range=initializer_range,
    )
    fork_devices: list = []
    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        do_sample=False,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def _qwen2_config(tokenizer: Any, **shape: Any) -> Any:
    """A Qwen2 config of `shape` whose vocabulary and special tokens are the tokenizer's."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
        rope_theta=10000.0,
        **shape,
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m trainer.shared.tiny", description="Build a tiny random Qwen2 chat model."
    )
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden-size", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab-size", type=int, default=1024)
    a = ap.parse_args(argv)
    path = build_tiny_chat_model(
        a.out_dir, a.seed, hidden_size=a.hidden_size, num_layers=a.layers, vocab_size=a.vocab_size
    )
    print(json.dumps({"model": str(path)}))


if __name__ == "__main__":
    main()
