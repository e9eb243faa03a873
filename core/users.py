"""Who is acting. Every core function that reads or writes user data takes an `Actor`.

With `AUTH=none` there is one user, `LOCAL_ACTOR`; with `AUTH=supabase` the signed-in
Supabase user's id becomes `Actor.user_id`. Roles: `member` sees only their own data;
`admin` additionally may call the functions in `core.db.repo` whose names start with
`admin_` (every user's spend, per-user limits). `SYSTEM_ACTOR` is the background syncer's
identity: an admin that owns nothing and acts on a user's data only through
`core.db.repo.admin_actor_for`, which returns that user's own `Actor`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["member", "admin"]
ROLES: tuple[Role, ...] = ("member", "admin")


@dataclass(frozen=True)
class Actor:
    user_id: str
    email: str = ""
    role: Role = "member"

    def __post_init__(self) -> None:
        if not self.user_id or len(self.user_id) > 64:
            raise ValueError("an actor needs a user id of 1-64 characters")
        if self.role not in ROLES:
            raise ValueError(f"unknown role {self.role!r}; use one of {', '.join(ROLES)}")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


# The one user of a local install (AUTH=none). An admin of its own deployment.
LOCAL_ACTOR = Actor(user_id="local", email="local@localhost", role="admin")

# The background syncer. Owns no data; see `core.db.repo.admin_actor_for`.
SYSTEM_ACTOR = Actor(user_id="system", email="", role="admin")
