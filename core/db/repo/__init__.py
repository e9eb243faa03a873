"""Repository functions: every read and write of BrightRun's tables goes through here.

Contract:
- Every public function takes the acting user (`core.users.Actor`) first and the SQLAlchemy
  session second, and scopes every query to `actor.user_id` through one helper
  (`core.db.repo.scope.owned`). Another user's id behaves exactly like an id that does not
  exist: `NotFound`, never `Forbidden`.
- Functions whose names start with `admin_` read or write across users; they raise
  `Forbidden` unless `actor.is_admin`. Nothing else crosses users.
- Functions flush but never commit: the caller owns the unit of work
  (`core.db.session_scope(settings)` commits when its block ends).
- Errors are the typed ones in `core.errors`.

One module per table or aggregate: `users` (users, limits, roles), `datasets`, `jobs`
(jobs and their events), `adapters` (adapters and versions), `costs`. Callers use this
package: `from core.db import repo` then `repo.create_job(actor, session, ...)`.
"""

from core.db.repo.adapters import (
    admin_list_evaluations_in_flight,
    create_adapter_version,
    delete_adapter,
    delete_version,
    get_adapter,
    get_or_create_adapter,
    get_version,
    get_version_by_number,
    latest_version,
    list_adapters,
    list_versions,
    promote_checkpoint,
    update_version,
    version_lineage,
)
from core.db.repo.common import month_of, new_id
from core.db.repo.costs import (
    admin_spend_by_user,
    cost_by_day,
    list_cost_records,
    month_spend,
    record_cost,
    spend_by,
)
from core.db.repo.datasets import (
    create_dataset,
    get_dataset,
    list_datasets,
    mark_dataset_deleted,
    rename_dataset,
)
from core.db.repo.jobs import (
    MEASURED_JOBS_PER_GPU,
    admin_find_job,
    admin_list_unfinished_jobs,
    append_event,
    append_events,
    count_active_jobs,
    create_job,
    get_job,
    list_events,
    list_jobs,
    list_unfinished_jobs,
    measured_throughput,
    missing_seqs,
    redact_spec,
    request_cancel,
    update_job,
)
from core.db.repo.users import (
    Limits,
    admin_actor_for,
    admin_list_users,
    admin_set_role,
    admin_set_user_hub_namespaces,
    admin_set_user_limits,
    ensure_user,
    get_user,
    sign_in_actor,
    user_limits,
)

__all__ = [
    "admin_list_evaluations_in_flight",
    "Limits",
    "MEASURED_JOBS_PER_GPU",
    "new_id",
    "month_of",
    "redact_spec",
    "sign_in_actor",
    "ensure_user",
    "get_user",
    "user_limits",
    "create_dataset",
    "get_dataset",
    "list_datasets",
    "rename_dataset",
    "mark_dataset_deleted",
    "create_job",
    "get_job",
    "list_jobs",
    "list_unfinished_jobs",
    "count_active_jobs",
    "measured_throughput",
    "update_job",
    "request_cancel",
    "append_event",
    "append_events",
    "list_events",
    "missing_seqs",
    "record_cost",
    "list_cost_records",
    "month_spend",
    "spend_by",
    "get_or_create_adapter",
    "get_adapter",
    "list_adapters",
    "delete_adapter",
    "create_adapter_version",
    "get_version",
    "get_version_by_number",
    "list_versions",
    "latest_version",
    "promote_checkpoint",
    "update_version",
    "delete_version",
    "version_lineage",
    "admin_actor_for",
    "admin_list_users",
    "admin_set_user_hub_namespaces",
    "admin_set_user_limits",
    "admin_set_role",
    "admin_spend_by_user",
    "cost_by_day",
    "admin_find_job",
    "admin_list_unfinished_jobs",
]
