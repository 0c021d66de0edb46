"""The one error type of spikelottery.

Argument mistakes raise the built-in :class:`ValueError` / :class:`TypeError` with a
message naming the argument; everything the library detects about a *model* or a
*file* (an unmatched filter, a ticket for another architecture, a corrupted file)
raises :class:`SpikeLotteryError`, which is also a :class:`ValueError` so generic
``except ValueError`` handlers keep working.
"""

from __future__ import annotations

__all__ = ["LayoutError", "NoSpikingLayerWarning", "SpikeLotteryError"]


class SpikeLotteryError(ValueError):
    """A model, a layer or a file is not what spikelottery needs; the message says what to do."""


class LayoutError(SpikeLotteryError):
    """The time and batch axes of a model's input cannot be told apart (energy estimates);
    the message names the neurons and asks for ``timesteps=`` / ``batch_size=``."""


class NoSpikingLayerWarning(UserWarning):
    """An energy estimate of a model in which no spiking neuron ran: its SNN figures price
    the activations as if they were spikes."""
