"""Conformance: Microsoft's own Python SDKs against the dormant simulator.

Run by `cargo test --test it sim_conformance -- --ignored` (which starts a
simulator and passes its settings in the environment), or by hand against
`dormant sim` with its printed settings exported:

    python -m venv .venv && .venv/bin/pip install msgraph-sdk azure-identity deprecated
    eval "$(dormant sim --users 500 | sed 's/^/export /')" &
    .venv/bin/python tests/conformance/msgraph_conformance.py

What it proves: azure-identity's ClientSecretCredential gets a token from the
simulated authority (OpenID metadata + token endpoint); msgraph-sdk parses the
simulator's user pages (with signInActivity, 120 per page whatever $top says),
follows @odata.nextLink through its PageIterator, and reads a $batch answer.
"""

import asyncio
import json
import os
import sys

# FACTS.md: requests lets REQUESTS_CA_BUNDLE override verify=; drop it so the
# simulator's CA (passed explicitly below) is what gets used.
for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
    os.environ.pop(var, None)

import httpx  # noqa: E402
from azure.identity import ClientSecretCredential  # noqa: E402
from kiota_authentication_azure.azure_identity_authentication_provider import (  # noqa: E402
    AzureIdentityAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient  # noqa: E402
from msgraph.generated.models.user import User  # noqa: E402
from msgraph.generated.users.users_request_builder import UsersRequestBuilder  # noqa: E402
from msgraph_core import GraphClientFactory  # noqa: E402
from msgraph_core.requests.batch_request_content import BatchRequestContent  # noqa: E402
from msgraph_core.requests.batch_request_item import BatchRequestItem  # noqa: E402
from msgraph_core.tasks.page_iterator import PageIterator  # noqa: E402
from kiota_abstractions.base_request_configuration import RequestConfiguration  # noqa: E402


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"missing {name}: run with the simulator's settings in the environment")
    return value


async def main() -> int:
    graph = env("DORMANT_GRAPH_URL").rstrip("/")
    authority = env("DORMANT_AUTHORITY_HOST").rstrip("/")
    ca = env("DORMANT_CA_FILE")
    truth_path = env("DORMANT_SIM_TRUTH")
    truth = [json.loads(line) for line in open(truth_path, encoding="utf-8")]

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
    http = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(verify=ca, base_url=f"{graph}/v1.0", timeout=60)
    )
    adapter = GraphRequestAdapter(auth, http)
    adapter.base_url = f"{graph}/v1.0"
    client = GraphServiceClient(request_adapter=adapter)

    # 1. Page every user with signInActivity.
    query = UsersRequestBuilder.UsersRequestBuilderGetQueryParameters(
        select=["id", "userPrincipalName", "accountEnabled", "signInActivity"], top=999
    )
    first = await client.users.get(request_configuration=RequestConfiguration(query_parameters=query))
    first_page = len(first.value)
    users: list[User] = []

    def collect(user: User) -> bool:
        users.append(user)
        return True

    iterator = PageIterator(first, adapter)
    await iterator.iterate(collect)

    by_id = {t["id"]: t for t in truth}
    problems = []
    if first_page > 120:
        problems.append(f"first page holds {first_page} users with signInActivity (max 120)")
    if len(users) != len(truth):
        problems.append(f"paged {len(users)} users, truth has {len(truth)}")
    with_activity = 0
    for u in users:
        t = by_id.get(u.id)
        if t is None:
            problems.append(f"unknown user {u.id}")
            continue
        if u.user_principal_name != t["upn"]:
            problems.append(f"upn mismatch for {u.id}")
        if u.sign_in_activity is not None:
            with_activity += 1
            last = u.sign_in_activity.last_successful_sign_in_date_time
            if last is not None and last.isoformat().replace("+00:00", "Z") != t["lastSuccessfulSignIn"]:
                problems.append(f"lastSuccessfulSignInDateTime mismatch for {u.id}: {last} vs {t['lastSuccessfulSignIn']}")

    # 2. A $batch read of three users, one of them missing.
    #    msgraph-sdk-python puts the absolute URL (with /v1.0) into each batch
    #    item; real Graph answers such items 400 "Resource not found for the
    #    segment ..." (msgraph-sdk-python issue #1015). The simulator must too;
    #    with the documented workaround (a URL relative to the version) it works.
    async def run_batch(relative: bool) -> dict:
        batch = BatchRequestContent()
        ids = [users[0].id, users[1].id, "00000000-0000-4000-8000-000000000000"]
        for n, uid in enumerate(ids):
            info = client.users.by_user_id(uid).to_get_request_information()
            item = BatchRequestItem(request_information=info, id=str(n))
            if relative:
                item.url = item.url.split("/v1.0", 1)[1]
            batch.add_request(str(n), item)
        answer = await client.batch.post(batch_request_content=batch)
        return {k: v.status for k, v in answer.responses.items()}

    sdk_default = await run_batch(relative=False)
    if set(sdk_default.values()) != {400}:
        problems.append(f"absolute batch URLs should be refused like Graph does: {sdk_default}")
    statuses = await run_batch(relative=True)
    if statuses != {"0": 200, "1": 200, "2": 404}:
        problems.append(f"batch statuses {statuses}")

    print(json.dumps({
        "paged": len(users),
        "first_page": first_page,
        "with_sign_in_activity": with_activity,
        "batch": statuses,
        "batch_with_sdk_absolute_urls": sdk_default,
        "problems": problems[:20],
    }))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
