#!/usr/bin/env python3
"""Build a small local Hugging Face tokenizer whose token counts equal `turnbench sim`'s `usage`.

The peers need a tokenizer to count tokens (and some to load at all), and the hub is out of reach.
`turnbench sim` answers with short words (each one token, with its leading space), and
make_prompts.py's prompts are made of such words too, so a word-level tokenizer that splits on
whitespace counts exactly what the sim counts. Its vocabulary is trained with `tokenizers` on what
the sim actually answers (asked here, once, through --sim-url) plus the prompts; words outside it
are one `<unk>` token each, so counts stay equal even then.

Writes tokenizer.json, tokenizer_config.json (PreTrainedTokenizerFast, a ChatML chat template as the
sim renders) and special_tokens_map.json into --out. Needs the `tokenizers` package.
"""

import argparse
import json
import os
import urllib.request

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

SPECIALS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def sim_answers(url, model, n_tokens):
    """Text of one long completion and one long chat answer from the sim."""
    out = []
    for path, body in (
        ("/v1/completions", {"prompt": "vocabulary", "max_tokens": n_tokens, "ignore_eos": True}),
        (
            "/v1/chat/completions",
            {"messages": [{"role": "user", "content": "vocabulary"}], "max_tokens": n_tokens, "ignore_eos": True},
        ),
    ):
        body["model"] = model
        req = urllib.request.Request(
            url.rstrip("/") + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            choice = json.load(r)["choices"][0]
        out.append(choice.get("text") or choice.get("message", {}).get("content") or "")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sim-url", required=True, help="base URL of a running turnbench sim")
    ap.add_argument("--model", default="turnbench-sim", help="model name the sim serves")
    ap.add_argument("--prompts", help="a JSONL of {\"text\": ...} prompts to add to the training text")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    corpus = sim_answers(a.sim_url, a.model, 4096)
    if a.prompts:
        with open(a.prompts) as f:
            corpus.extend(json.loads(line)["text"] for line in f)

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=SPECIALS, min_frequency=1))
    os.makedirs(a.out, exist_ok=True)
    tok.save(os.path.join(a.out, "tokenizer.json"))

    specials = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "</s>"}
    with open(os.path.join(a.out, "tokenizer_config.json"), "w") as f:
        json.dump(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "model_max_length": 32768,
                "clean_up_tokenization_spaces": False,
                "add_bos_token": False,
                "add_eos_token": False,
                "chat_template": CHATML,
                **specials,
            },
            f,
            indent=1,
        )
    with open(os.path.join(a.out, "special_tokens_map.json"), "w") as f:
        json.dump(specials, f, indent=1)

    check = corpus[0]
    n = len(tok.encode(check).ids)
    print(f"build_tokenizer: vocabulary {tok.get_vocab_size()} in {a.out} (a 4096-token sim answer counts {n})")


if __name__ == "__main__":
    main()
