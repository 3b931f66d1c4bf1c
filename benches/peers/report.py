#!/usr/bin/env python3
"""Turn the per-client results of run.sh into one table (stdout and results.md).

    report.py RUN_DIR OUT.md

RUN_DIR holds, per client in run order, `<client>/result.json` (from measure.py) and
`<client>/info.json` ({"name", "version", "how"}) or `<client>/skipped.txt` (one line: why), plus
`settings.json`. Standard library only.
"""

import json
import os
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def fmt(x, digits):
    return "–" if x is None else f"{x:,.{digits}f}"


def main():
    run_dir, out_md = sys.argv[1], sys.argv[2]
    settings = load(os.path.join(run_dir, "settings.json"))
    rows, base = [], None
    for name in settings["clients"]:
        d = os.path.join(run_dir, name)
        skipped = os.path.join(d, "skipped.txt")
        if os.path.exists(skipped):
            with open(skipped) as f:
                rows.append((name, None, None, f.read().strip()))
            continue
        res_path = os.path.join(d, "result.json")
        if not os.path.exists(res_path):
            rows.append((name, None, None, "no result (run.sh interrupted?)"))
            continue
        res, info = load(res_path), load(os.path.join(d, "info.json"))
        note = []
        if res["exit_code"] not in (0, None) and res["stopped_by"] is None:
            note.append(f"exit {res['exit_code']}")
        if res["stopped_by"]:
            note.append(f"stopped: {res['stopped_by']}")
        if not res["requests"]:
            note.append("no request completed: see its client.log")
        rows.append((name, res, info, "; ".join(note)))
        if name == "turnbench" and res["client_cpu_ms_per_req"]:
            base = res["client_cpu_ms_per_req"]

    head = (
        "| client (version) | CPU ms/req | req/s (steady) | requests | CPU/req vs turnbench "
        "| client CPU / sim CPU | notes |\n|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for name, res, info, note in rows:
        if res is None:
            lines.append(f"| {name} | – | – | – | – | – | skipped: {note} |")
            continue
        ms = res["client_cpu_ms_per_req"]
        ratio = f"{ms / base:.1f}×" if ms and base else "–"
        sim = res["sim_cpu_ms_per_req"]
        vs_sim = f"{ms / sim:.1f}×" if ms and sim else "–"
        label = f"{name} {info.get('version', '')}".strip()
        lines.append(
            f"| {label} | {fmt(ms, 2)} | {fmt(res['steady_req_per_s'], 0)} | {res['requests']:,} | {ratio} "
            f"| {vs_sim} | {note} |"
        )
    how = [f"- **{info['name']}**: `{info['how']}`" for _, res, info, _ in rows if info]
    s = settings
    text = "\n".join(
        [
            f"# Client CPU cost against `turnbench sim` — {s['date']}",
            "",
            f"Machine: {s['machine']}. Each client against its own fresh `{s['sim_cmd']}`; "
            f"{s['prompts']:,} unique {s['prompt_tokens']}-token chat prompts, {s['output_tokens']} output tokens "
            f"with ignore_eos, concurrency {s['concurrency']}, {s['secs']} s of load. CPU = user+sys of the "
            "client's whole process tree (start-up included); requests = the sim's "
            "`vllm:request_success_total`; steady req/s = slope between 10 % and 90 % of completions; "
            "sim CPU = the sim process's own user+sys over the same run.",
            "",
            f"turnbench binary (client and sim): `{s.get('turnbench_bin', '?')}`, "
            f"{s.get('turnbench_build', '?')} build.",
            "",
            "\n".join(lines),
            "",
            "How each client was run (URL, paths and the tokenizer folder filled in by run.sh):",
            "",
            "\n".join(how),
            "",
            "Runs are noisy on small machines: compare ratios from one session, not absolute figures "
            "across sessions.",
            "",
        ]
    )
    with open(out_md, "w") as f:
        f.write(text)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
