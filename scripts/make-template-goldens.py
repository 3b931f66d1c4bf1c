#!/usr/bin/env python3
"""Renders tests/golden/templates/fixtures.json with every templates/*.jinja exactly as Python
transformers' `apply_chat_template` does (its own jinja environment: ImmutableSandboxedEnvironment,
trim_blocks, lstrip_blocks, raise_exception, strftime_now, its tojson), and writes the goldens that
tests/template_golden.rs compares byte for byte. Run once after changing a template or a fixture:

    python scripts/make-template-goldens.py        # needs: pip install transformers jinja2

Each case is rendered with add_generation_prompt true and false:
tests/golden/templates/<template>/<case>.gen.txt and <case>.nogen.txt.
"""
import json
import pathlib
import sys

from transformers.utils.chat_template_utils import render_jinja_template

ROOT = pathlib.Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "templates"


def main() -> int:
    fixtures = json.loads((GOLDEN / "fixtures.json").read_text(encoding="utf-8"))
    written = 0
    for name, tokens in sorted(fixtures["templates"].items()):
        source = (ROOT / "templates" / f"{name}.jinja").read_text(encoding="utf-8")
        special = {k: v for k, v in tokens.items() if v is not None}
        out = GOLDEN / name
        out.mkdir(parents=True, exist_ok=True)
        for case in fixtures["cases"]:
            for gen in (True, False):
                rendered, _ = render_jinja_template(
                    conversations=[case["messages"]],
                    chat_template=source,
                    add_generation_prompt=gen,
                    **special,
                )
                suffix = "gen" if gen else "nogen"
                (out / f"{case['name']}.{suffix}.txt").write_bytes(rendered[0].encode("utf-8"))
                written += 1
    print(f"wrote {written} goldens under {GOLDEN.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
