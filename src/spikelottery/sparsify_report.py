"""What one :func:`~spikelottery.sparsify` call did: :class:`SparsifyReport`."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["SparsifyReport"]


@dataclass
class SparsifyReport:
    """What one :func:`sparsify` call did: layers swapped, updated and skipped (with why).

    ``scope`` is ``"layer"`` or ``"global"`` (one threshold over the swapped and updated
    layers). ``binarized`` lists the activation modules replaced by binary activations
    (``activations="binary"``); ``functional_activations`` the modules that call an
    activation as a function, which stays real (``None``: not looked for, no example input). ``aliases`` maps each further name of a layer registered at several places to the
    name it is listed under; ``tied`` maps a swapped layer to the swapped layers that
    share its frozen weight and scores.
    """

    pa: float
    pb: float | None
    mode: str
    swapped: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    tied: dict[str, list[str]] = field(default_factory=dict)
    patch_embed: str | None = None
    scope: str = "layer"
    binarized: list[str] = field(default_factory=list)
    functional_activations: dict[str, list[str]] | None = None

    def __str__(self) -> str:
        pb = "unchanged" if self.pb is None else f"{self.pb:g}"
        scope = "" if self.scope == "layer" else f", scope={self.scope!r}"
        lines = [
            f"sparsify(pa={self.pa:g}, pb={pb}, mode={self.mode!r}{scope}): "
            f"{len(self.swapped)} swapped, {len(self.updated)} updated, {len(self.skipped)} skipped"
        ]
        lines += [f"  swapped  {name}" for name in self.swapped]
        lines += [f"  updated  {name}" for name in self.updated]
        lines += [f"  shared   {alias} is {name}" for alias, name in self.aliases.items()]
        lines += [f"  tied     {name} with {', '.join(o)}" for name, o in self.tied.items()]
        lines += [f"  skipped  {name}: {why}" for name, why in self.skipped.items()]
        if self.patch_embed is not None:
            lines.append(f"  patch selector (pb={pb}) after {self.patch_embed!r}")
        lines += [f"  binary   {name} (activation)" for name in self.binarized]
        if self.binarized and self.functional_activations is None:
            lines.append(
                "  note     activations called as functions (F.relu) were not looked for: "
                "pass example_inputs to name them"
            )
        for name, funcs in (self.functional_activations or {}).items():
            lines.append(
                f"  real     {name or '<model>'} calls {', '.join(funcs)} as a function: "
                "not binarised"
            )
        return "\n".join(lines)
