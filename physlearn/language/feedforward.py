"""The checks of a feed-forward network: `layer`s, their `feedback`s and a cost."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .checker import Checker
    from .errors import Span


def check_feedforward(checker: Checker, end: Span) -> None:
    """A model of `layer`s: no states or update rules, a cost that reads the layers, a
    `learn` line that fits (DTP or BP)."""
    sp = checker.spec
    if sp.updates:
        rule = next(iter(sp.updates.values()))
        raise checker.error("E232", "a feed-forward network has no states to update", rule.span)
    if not sp.names("input"):
        raise checker.error("E232", "a feed-forward network needs an `input`", end,
                            "declare e.g. `input x[n_in]`")
    if sp.cost is None:
        raise checker.error("E209", "the model has no `cost`", end,
                            "add e.g. `cost C = crossentropy(o, y)`")
    checker.check_cost()
    for name in sp.layers:
        d, _dims = sp.lets[f"layer:{name}"]
        checker._refuse_target_in(d.body, d.span, f"layer {name}")
    from .checker import _reads_name
    if not any(_reads_name(sp.cost.body, n) for n in sp.layers):
        last = list(sp.layers)[-1]
        raise checker.error("E232", "the cost reads no layer", sp.cost.span,
                            f"score the last layer, e.g. `cost C = crossentropy({last}, y)`")
    kind = sp.kind
    if sp.learn is not None and sp.learn.method not in kind.learn:
        raise checker.error("E219", f"`learn {sp.learn.method}` does not fit a feed-forward "
                            "network", sp.learn.span, f"use learn {' or '.join(kind.learn)}")
    if sp.relax is not None:
        raise checker.error("E232", "a feed-forward network does not relax: drop the `relax` "
                            "line", sp.relax.span)
