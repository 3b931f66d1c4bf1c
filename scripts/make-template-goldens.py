#!/usr/bin/env python3
"""Renders tests/golden/templates/fixtures.json with every templates/*.jinja exactly as Python
transformers' `apply_chat_template` does (its own jinja environment: ImmutableSandboxedEnvironment,
trim_blocks, lstrip_blocks, raise_exception, strftime_now, its tojson), and writes the goldens that
tests/template_golden.rs compares byte for byte. Run once after changing a template or a fixture,
with the Python of the vLLM venv (it has transformers and jinja2; `scripts/test.sh --with-vllm`
installs it and exports its path):

    "$TURNBENCH_VLLM_VENV/bin/python" scripts/make-template-goldens.py          # rewrite
    "$TURNBENCH_VLLM_VENV/bin/python" scripts/make-template-goldens.py --check  # diff only

Each case is rendered with add_generation_prompt true and false:
tests/golden/templates/<template>/<case>.gen.txt and <case>.nogen.txt. GENERATED_BY names the
transformers and Jinja2 versions that rendered them, so a lock bump that changes rendering shows.

--check writes nothing: it prints a unified diff for every golden that differs, names missing
ones and stale ones (a .txt no case produces), compares GENERATED_BY, and exits 1 on any
difference (scripts/test.sh runs it in CI).
"""
import difflib
import json
import pathlib
import sys

import jinja2
import transformers
from transformers.utils.chat_template_utils import render_jinja_template

ROOT = pathlib.Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "templates"
GENERATED_BY = GOLDEN / "GENERATED_BY"


def render_all() -> dict:
    """Every golden, as {path: bytes}."""
    fixtures = json.loads((GOLDEN / "fixtures.json").read_text(encoding="utf-8"))
    files = {}
    for name, tokens in sorted(fixtures["templates"].items()):
        source = (ROOT / "templates" / f"{name}.jinja").read_text(encoding="utf-8")
        special = {k: v for k, v in tokens.items() if v is not None}
        for case in fixtures["cases"]:
            for gen in (True, False):
                rendered, _ = render_jinja_template(
                    conversations=[case["messages"]],
                    chat_template=source,
                    add_generation_prompt=gen,
                    **special,
                )
                suffix = "gen" if gen else "nogen"
                files[GOLDEN / name / f"{case['name']}.{suffix}.txt"] = rendered[0].encode("utf-8")
    files[GENERATED_BY] = f"transformers {transformers.__version__}, Jinja2 {jinja2.__version__}\n".encode("utf-8")
    return files


def check(files: dict) -> int:
    problems = 0
    for path, want in sorted(files.items()):
        rel = path.relative_to(ROOT)
        if not path.exists():
            print(f"missing: {rel}")
            problems += 1
            continue
        have = path.read_bytes()
        if have != want:
            problems += 1
            diff = difflib.unified_diff(
                have.decode("utf-8", "replace").splitlines(keepends=True),
                want.decode("utf-8", "replace").splitlines(keepends=True),
                fromfile=f"{rel} (on disk)",
                tofile=f"{rel} (transformers)",
            )
            sys.stdout.writelines(diff)
            print()
    for path in sorted(GOLDEN.glob("*/*.txt")):
        if path not in files:
            print(f"stale: {path.relative_to(ROOT)} (no case renders it)")
            problems += 1
    if problems:
        print(f"{problems} golden(s) differ from what transformers renders; "
              "regenerate with scripts/make-template-goldens.py and review the diff")
        return 1
    print(f"all {len(files) - 1} goldens match transformers {transformers.__version__}")
    return 0


def main() -> int:
    files = render_all()
    if "--check" in sys.argv[1:]:
        return check(files)
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"wrote {len(files) - 1} goldens under {GOLDEN.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
