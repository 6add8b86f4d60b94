"""What a sync run did: its counts, timing and samples (the engine fills it, the state logs it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["SyncResult"]


@dataclass
class SyncResult:
    sync: str
    run_id: str
    mode: str
    dry_run: bool
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    rejected: int = 0
    rows_written: int = 0
    seconds: float = 0.0
    full_sync_reason: str | None = None
    """Why this run rewrote every row although its mode is incremental (Redis lost data)."""
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def rows_per_second(self) -> float:
        return self.rows_written / self.seconds if self.seconds > 0 else 0.0

    def metadata(self) -> dict[str, Any]:
        """Plain values for Dagster metadata (no secrets)."""
        return {
            "mode": self.mode,
            "dry_run": self.dry_run,
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "rows_written": self.rows_written,
            "seconds": round(self.seconds, 3),
            "rows_per_second": round(self.rows_per_second, 1),
            "full_sync_reason": self.full_sync_reason or "none",
            "run_id": self.run_id,
        }
