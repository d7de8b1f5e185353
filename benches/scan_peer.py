"""The scan benchmark's sequential peer (`cargo bench --bench scan` runs it).

Microsoft's Python Graph SDK (msgraph-sdk, pinned in
tests/conformance/requirements.txt) pages every user of the tenant the
documented way: one `GET /users` with the scan's `$select` (signInActivity
included, so Graph hands out at most 120 users a page), followed through
`@odata.nextLink` by the SDK's PageIterator, one request at a time.

For each user it applies dormant's first-stage rule (src/policy/activity.rs
and verdict.rs `classify`) on the sign-in fields alone:
- last activity = lastSuccessfulSignInDateTime; the interactive and
  non-interactive dates only when dated before 2023-12-01 (the successful
  field starts then; later dates may be failed attempts);
- created fewer than `PEER_GRACE_DAYS` calendar days ago: too new to judge;
- last activity fewer than `PEER_INACTIVE_DAYS` days ago: active;
- no signInActivity at all: unknown, unless sign-in logging covered the
  whole life (created after 2020-05-01) and no accepted invitation says
  otherwise, then never signed in (also with an empty record).
Users that are not plainly active form the set it prints: their count, a
per-category count and the SHA-256 of their sorted lower-case ids (one per
line, each followed by a newline); with `PEER_IDS_OUT` set, the sorted ids
are also written there.

With `PEER_MAX_SECONDS` set, the peer stops paging once that much time has
passed (the bench's cap for a sequential run that would take hours): the
output then says `"partial": true`, and with `PEER_SCANNED_OUT` set the ids of
every user it did judge are written there, so the bench can compare both sets
over the same users.

Settings come from the environment the simulator printed (`DORMANT_*`).
Output: one JSON line on stdout.
"""

import asyncio
import hashlib
import json
import os
import sys
import time
from datetime import date, datetime, timezone

# FACTS.md: requests lets REQUESTS_CA_BUNDLE override verify=; drop it so the
# simulator's CA (passed explicitly below) is what gets used.
for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
    os.environ.pop(var, None)

import httpx  # noqa: E402
from azure.identity import ClientSecretCredential  # noqa: E402
from kiota_abstractions.base_request_configuration import RequestConfiguration  # noqa: E402
from kiota_authentication_azure.azure_identity_authentication_provider import (  # noqa: E402
    AzureIdentityAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient  # noqa: E402
from msgraph.generated.users.users_request_builder import UsersRequestBuilder  # noqa: E402
from msgraph_core import GraphClientFactory  # noqa: E402
from msgraph_core.tasks.page_iterator import PageIterator  # noqa: E402

# dormant's SCAN_SELECT (src/graph/ops.rs), so both pull the same data.
SELECT = [
    "id", "userPrincipalName", "displayName", "mail", "userType", "accountEnabled",
    "createdDateTime", "creationType", "externalUserState", "onPremisesSyncEnabled",
    "jobTitle", "department", "identities", "assignedLicenses",
    "licenseAssignmentStates", "signInActivity",
]
SUCCESSFUL_FIELD_START = datetime(2023, 12, 1, tzinfo=timezone.utc)
SIGN_IN_LOGGING_START = datetime(2020, 5, 1, tzinfo=timezone.utc)


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"missing {name}: run with the simulator's settings in the environment")
    return value


def days_between(then: datetime, today: date) -> int:
    """Whole calendar days in UTC, as dormant counts them."""
    return (today - then.astimezone(timezone.utc).date()).days


def category(user, today: date, inactive_days: int, grace_days: int) -> str:
    s = user.sign_in_activity
    candidates = []
    if s is not None:
        if s.last_successful_sign_in_date_time is not None:
            candidates.append(s.last_successful_sign_in_date_time)
        for t in (s.last_sign_in_date_time, s.last_non_interactive_sign_in_date_time):
            if t is not None and t < SUCCESSFUL_FIELD_START:
                candidates.append(t)
    created = user.created_date_time
    new = created is not None and days_between(created, today) < grace_days
    if candidates:
        days = max(0, days_between(max(candidates), today))
        return "active" if days < inactive_days or new else "inactive"
    if new:
        return "new"
    accepted = (user.external_user_state or "").lower() == "accepted"
    blank_means_never = created is not None and created >= SIGN_IN_LOGGING_START and not accepted
    if s is None and not blank_means_never:
        return "unknown"
    return "never-signed-in"


async def main() -> int:
    graph = env("DORMANT_GRAPH_URL").rstrip("/")
    authority = env("DORMANT_AUTHORITY_HOST").rstrip("/")
    ca = env("DORMANT_CA_FILE")
    inactive_days = int(os.environ.get("PEER_INACTIVE_DAYS", "90"))
    grace_days = int(os.environ.get("PEER_GRACE_DAYS", "30"))
    max_seconds = float(os.environ.get("PEER_MAX_SECONDS", "inf"))
    capped = max_seconds != float("inf")
    started = time.monotonic()
    today = datetime.now(timezone.utc).date()

    credential = ClientSecretCredential(
        env("DORMANT_TENANT_ID"),
        env("DORMANT_CLIENT_ID"),
        env("DORMANT_CLIENT_SECRET"),
        authority=authority,
        disable_instance_discovery=True,
        connection_verify=ca,
    )
    auth = AzureIdentityAuthenticationProvider(
        credential,
        scopes=["https://graph.microsoft.com/.default"],
        allowed_hosts=["127.0.0.1"],
    )
    sent = {"graph": 0}

    async def count(_request):
        sent["graph"] += 1

    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(
            verify=ca,
            base_url=f"{graph}/v1.0",
            timeout=100,
            event_hooks={"request": [count]},
        )
    )
    adapter = GraphRequestAdapter(auth, http)
    adapter.base_url = f"{graph}/v1.0"
    client = GraphServiceClient(request_adapter=adapter)

    query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(select=SELECT, top=999)
    by_category: dict[str, int] = {}
    listed: list[str] = []
    judged: list[str] = []
    scanned = 0
    partial = False

    def judge(user) -> bool:
        nonlocal scanned, partial
        # Stop at a page boundary once the cap has passed (Graph's pages with
        # signInActivity hold 120 users): every user of a page it judged is
        # judged, none of the page fetched after the cap is.
        if scanned % 120 == 0 and scanned and time.monotonic() - started > max_seconds:
            partial = True
            return False
        scanned += 1
        if capped:
            judged.append(user.id.lower())
        c = category(user, today, inactive_days, grace_days)
        by_category[c] = by_category.get(c, 0) + 1
        if c not in ("active", "new"):
            listed.append(user.id.lower())
        return True

    error = None
    try:
        first = await client.users.get(
            request_configuration=RequestConfiguration(query_parameters=query)
        )
        await PageIterator(first, adapter).iterate(judge)
    except Exception as e:  # the run failed: say so, do not pretend
        error = f"{type(e).__name__}: {e}"
    seconds = time.monotonic() - started

    listed.sort()
    digest = hashlib.sha256("".join(f"{i}\n" for i in listed).encode()).hexdigest()
    out = os.environ.get("PEER_IDS_OUT")
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.writelines(f"{i}\n" for i in listed)
    out = os.environ.get("PEER_SCANNED_OUT")
    if out and partial:
        with open(out, "w", encoding="utf-8") as f:
            f.writelines(f"{i}\n" for i in judged)
    print(json.dumps({
        "scanned": scanned,
        "listed": len(listed),
        "sha256": digest,
        "byCategory": by_category,
        "graphRequests": sent["graph"],
        "seconds": seconds,
        "partial": partial,
        "error": error,
    }))
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
