"""Images left out of the shards, by reason, with a few example ids each: every stage adds to one tally."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

EXAMPLES_PER_REASON = 5


@dataclass
class Skipped:
    counts: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)

    def add(self, reason: str, image_id: str, detail: str = "", count: int = 1) -> None:
        self.counts[reason] += count
        examples = self.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(f"{image_id}: {detail}" if detail else image_id)

    def merge(self, other: "Skipped") -> None:
        for reason, count in other.counts.items():
            self.counts[reason] += count
            room = EXAMPLES_PER_REASON - len(self.examples.setdefault(reason, []))
            self.examples[reason].extend(other.examples.get(reason, [])[: max(room, 0)])

    def copy(self) -> "Skipped":
        return Skipped.from_dict(self.to_dict())

    def to_dict(self) -> dict:
        return {"total": sum(self.counts.values()), "by_reason": dict(self.counts), "examples": self.examples}

    @classmethod
    def from_dict(cls, data: dict) -> "Skipped":
        return cls(Counter(data.get("by_reason", {})), {k: list(v) for k, v in data.get("examples", {}).items()})
