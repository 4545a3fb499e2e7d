"""One cycle: the reading policy, observing the target, applying a plan through the Target port."""
