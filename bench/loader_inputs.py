"""What loading costs, for a large valid config and for hostile ones.

``parse_config`` (read bounds, YAML limits, schema, references) in this process, best of
``--repeat`` by CPU time (the machine is shared; CPU time moves less than wall time):

valid        the 10,000-route config of ``bench/xds_scale.py`` (about 1 MB)
valid+scan   the same, split: the YAML limits scan alone (libyaml events) and the RE2 checks
hostile      the inputs of issue 6 (an alias bomb, ``[`` x 100,000, a 3,000-level block list,
             a flat list of a million scalars, 245,000 unknown keys: the largest file under
             the node limit) and the problem count each gives; each must be refused quickly.

    python bench/loader_inputs.py
    python bench/loader_inputs.py --routes 20000 --repeat 5
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import yaml
from xds_scale import generate_config

from meshgate.config.regex import check_regex
from meshgate.loader import ConfigError, parse_config
from meshgate.yaml_bounds import check_events


def best_cpu(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def alias_bomb(levels: int = 9) -> str:
    lines = ['a: &a [{k: 1, k: 2},"lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        name, prev = chr(ord("a") + i), chr(ord("a") + i - 1)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


HOSTILE = {
    "alias bomb (9 levels x 9)": alias_bomb,
    "'[' x 100,000": lambda: "[" * 100_000,
    "3,000-level block list": lambda: "- " * 3000,
    "1,000,000 scalars in a list": lambda: "[" + "a," * 1_000_000 + "a]",
    "245,000 unknown keys": lambda: "".join(f"k{i}: 1\n" for i in range(245_000)),
}


def refuse(text: str) -> str:
    try:
        parse_config(text, "bench.yaml")
    except ConfigError as exc:
        return f"{len(exc.problems)} problem(s) + {exc.omitted} counted: {exc.problems[0]}"
    return "accepted"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--routes", type=int, default=10_000)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args(argv)
    text = yaml.safe_dump(generate_config(a.routes, 8080), sort_keys=False)
    print(f"valid config: {a.routes} routes, {len(text.encode())} bytes")
    total = best_cpu(lambda: parse_config(text, "bench.yaml"), a.repeat)
    scan = best_cpu(lambda: check_events(yaml.parse(text, Loader=yaml.CSafeLoader), "b"), a.repeat)
    patterns = [r["match"]["regex"] for r in _routes(text) if "regex" in r["match"]]
    re2 = best_cpu(lambda: [check_regex(x) for x in patterns], a.repeat)
    print(f"  parse_config        {total:.3f} s CPU (best of {a.repeat})")
    print(f"  of which YAML scan  {scan:.3f} s; RE2 checks of {len(patterns)} regexes {re2:.3f} s")
    for name, make in HOSTILE.items():
        hostile = make()
        t0 = time.process_time()
        outcome = refuse(hostile)
        took = time.process_time() - t0
        print(f"{name:<30} {len(hostile):>9} bytes  {took:6.2f} s  {outcome[:110]}")
    return 0


def _routes(text: str) -> list[dict[str, dict[str, str]]]:
    data = yaml.load(text, Loader=yaml.CSafeLoader)
    routes: list[dict[str, dict[str, str]]] = data["listeners"][0]["virtual_hosts"][0]["routes"]
    return routes


if __name__ == "__main__":
    raise SystemExit(main())
