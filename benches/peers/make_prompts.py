#!/usr/bin/env python3
"""Write N unique single-turn chat prompts in the input format of every client benches/peers/ runs.

Each prompt is exactly --tokens tokens for `turnbench sim`'s tokenizer *and* for the whitespace
tokenizer that build_tokenizer.py makes: a unique first word `q00042` (6 alphanumeric characters:
one sim token), then short lowercase words (at most 6 letters, each with its leading space: one sim
token each). The unique first word keeps the sim's prefix cache from reusing anything between
prompts. Standard library only.

Files written into --out:
  turnbench.jsonl   {"id", "messages": [user]}                 turnbench --workload openai
  guidellm.jsonl    {"messages": [user], "output_tokens_count"}  GuideLLM json_file dataset
  aiperf.jsonl      {"text", "output_length"}                    AIPerf --custom-dataset-type single_turn
  vllm_custom.jsonl {"prompt", "output_tokens"}                  vllm bench serve --dataset-name custom
  multi_turn.json   [{"id", "messages": [user, assistant]}]      vLLM benchmark_serving_multi_turn.py
                    (that script needs an assistant message after every user turn, or it hangs)
"""

import argparse
import json
import os
import random

# Prompt filler: lowercase, at most 6 letters (one sim token each, with its leading space).
WORDS = (
    "about after again air all also answer any area ask back base begin best big block both bring "
    "build cache call can case cause change check city clear close code cold come could count "
    "data day deep does done down draw each early earth end even every fact far fast feel field "
    "file find first fix floor follow food form found four free from full game give good great "
    "group grow hand hard have head hear help here high hold home hot hour house idea input into "
    "issue just keep key kind know land large last later layer learn leave left less light like "
    "line list little live load local long look low made make many map mean memory might "
    "miss model more most move much must name near need never new next night node note number "
    "often old only open order other output over page paper part pass path people place plan "
    "point port power press prompt put query queue quick rate read real reason record rest right "
    "river road round rule run same save say scale second see seem send server set shape short "
    "show side simple size slow small sound space speed spend stand start state step still stop "
    "store story stream study such sure system table take talk team tell test than that then "
    "there these thing think third this those three time token total touch toward track tree "
    "true turn two under unit until upon use value very voice wait walk want warm watch water way "
    "week well went what when where which while white whole why wide will window with word work "
    "world would write year young"
).split()
assert all(len(w) <= 6 and w.isalpha() and w.islower() for w in WORDS)

# The sim's answers are made of words like these; any text works as the recorded assistant turn.
ANSWER_WORDS = "the cache block token prefix model server turn reuse fast batch query".split()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="number of prompts (at most 99999)")
    ap.add_argument("--tokens", type=int, default=200, help="tokens per prompt")
    ap.add_argument("--output-tokens", type=int, default=128, help="answer length asked for")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", required=True, help="folder to write into")
    a = ap.parse_args()
    if not 1 <= a.n <= 99999:
        ap.error("--n must be between 1 and 99999")
    if a.tokens < 2:
        ap.error("--tokens must be at least 2")
    os.makedirs(a.out, exist_ok=True)
    rng = random.Random(a.seed)
    prompts = [
        " ".join([f"q{i:05d}"] + [rng.choice(WORDS) for _ in range(a.tokens - 1)]) for i in range(1, a.n + 1)
    ]
    answer = " ".join(ANSWER_WORDS[i % len(ANSWER_WORDS)] for i in range(a.output_tokens))

    def write_jsonl(name, rows):
        with open(os.path.join(a.out, name), "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")

    write_jsonl("turnbench.jsonl", ({"id": p[:6], "messages": [{"role": "user", "content": p}]} for p in prompts))
    write_jsonl(
        "guidellm.jsonl",
        ({"messages": [{"role": "user", "content": p}], "output_tokens_count": a.output_tokens} for p in prompts),
    )
    write_jsonl("aiperf.jsonl", ({"text": p, "output_length": a.output_tokens} for p in prompts))
    write_jsonl("vllm_custom.jsonl", ({"prompt": p, "output_tokens": a.output_tokens} for p in prompts))
    with open(os.path.join(a.out, "multi_turn.json"), "w") as f:
        json.dump(
            [
                {
                    "id": p[:6],
                    "messages": [{"role": "user", "content": p}, {"role": "assistant", "content": answer}],
                }
                for p in prompts
            ],
            f,
        )
    print(f"make_prompts: {a.n} prompts of {a.tokens} tokens in {a.out}")


if __name__ == "__main__":
    main()
