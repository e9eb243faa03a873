"""What each page reads, as plain data scoped to the actor; no query writes.

Every function takes the acting user (`core.users.Actor`) and a SQLAlchemy session (or
the settings, for the few that open their own), reads through the same owner scope as
`core.db.repo` (another user's id is `NotFound`), and returns frozen dataclasses of plain
values (never ORM rows), so a page only renders and a test can assert on the numbers.

One module per area: `jobs` (the job table and its filters), `job` (one job: detail,
metric series, event log, checkpoints), `compare` (runs side by side), `home` (the Overview page), `adapters`, `spend`
(the Costs page), `endpoint_bill` (RunPod's bill beside the jobs' costs), `probes` (the health check), `templates` (models, chat templates,
truncation). Times are UTC and timezone-aware; money is US dollars; durations are seconds.
"""

from core.queries.adapters import AdapterRow, adapter_rows, repo_adapter_name, zip_builder
from core.queries.compare import (
    MAX_RUNS,
    METRIC_MEANINGS,
    MIN_RUNS,
    Comparison,
    RunCurves,
    SettingDiff,
    compare_jobs,
)
from core.queries.endpoint_bill import BillDay, EndpointBill, endpoint_bill
from core.queries.home import Overview, RunningJob, overview
from core.queries.job import (
    EventLine,
    JobDetail,
    JobView,
    MetricSeries,
    ShownSample,
    event_log,
    job_checkpoints,
    job_detail,
    last_metrics,
    metric_series,
    shown_samples,
    stop_note,
)
from core.queries.jobs import (
    JOB_SORTS,
    PAGE_SIZES,
    JobFilter,
    JobFilterOptions,
    JobPage,
    JobRow,
    job_filter_options,
    job_page,
    live_cost_usd,
)
from core.queries.method_metrics import MethodSeries, method_series
from core.queries.preference import PreferenceSeries, preference_series
from core.queries.probes import PartHealth, health
from core.queries.spend import (
    JobSpend,
    SpendView,
    cost_per_busy_hour,
    month_spend_live,
    spend_months,
    spend_view,
    user_limits,
)
from core.queries.templates import (
    TemplateView,
    model_options,
    render_with_template,
    truncated_share,
)
from core.queries.volume import volume_costs

__all__ = [
    "JOB_SORTS",
    "PAGE_SIZES",
    "MAX_RUNS",
    "MIN_RUNS",
    "AdapterRow",
    "Comparison",
    "BillDay",
    "EndpointBill",
    "EventLine",
    "JobDetail",
    "JobFilter",
    "JobFilterOptions",
    "JobPage",
    "JobRow",
    "JobSpend",
    "JobView",
    "MetricSeries",
    "PreferenceSeries",
    "preference_series",
    "method_series",
    "MethodSeries",
    "Overview",
    "PartHealth",
    "RunCurves",
    "RunningJob",
    "SettingDiff",
    "SpendView",
    "TemplateView",
    "adapter_rows",
    "compare_jobs",
    "METRIC_MEANINGS",
    "endpoint_bill",
    "cost_per_busy_hour",
    "event_log",
    "health",
    "job_checkpoints",
    "job_detail",
    "job_filter_options",
    "job_page",
    "last_metrics",
    "shown_samples",
    "ShownSample",
    "live_cost_usd",
    "metric_series",
    "model_options",
    "month_spend_live",
    "overview",
    "render_with_template",
    "repo_adapter_name",
    "spend_months",
    "spend_view",
    "stop_note",
    "volume_costs",
    "truncated_share",
    "user_limits",
    "zip_builder",
]
