"""Microsoft Graph v1.0 shapes.

G-UDELTA: microsoftgraph/microsoft-graph-docs-contrib ``concepts/delta-query-users.md``
(135d0012d7737c252edee4768dba08ef3f45a659) and ``api-reference/v1.0/api/user-delta.md``.
G-GDELTA: ``api-reference/v1.0/api/group-delta.md`` (07613014a0249a4430aa6501d40cf13891d61ac4):
``members@delta`` entries, a big group spread over pages.
G-MEMBERS: ``api-reference/v1.0/api/group-list-members.md`` / ``group-list-transitivemembers.md``
(00e146a92755a19260d07a735eee6e9df034f45f): members are directoryObjects (users, groups,
devices, service principals, org contacts) told apart by ``@odata.type``.
G-OVERVIEW: ``concepts/delta-query-overview.md`` (01a90577547eb7a498716ca4530d92e0eb406a0e):
410 with a Location holding an empty ``$deltatoken``; and the Microsoft 365 Dev blog
"Duration of change tracking tokens for identity and education resources" (2020):
400 ``syncStateNotFound``.
G-THROTTLE: ``concepts/throttling.md``, and the 429 seen in Microsoft Q&A 1138873.
G-USER: ``api-reference/v1.0/resources/user.md``: ``userType``, ``otherMails``,
``externalUserState``.
"""

BASE = "https://graph.microsoft.com"

# G-UDELTA: first page has a soft-deleted (changed) and a hard-deleted (deleted) user
USERS_DELTA_PAGE_1 = {
    "@odata.context": f"{BASE}/v1.0/$metadata#users(displayName,givenName,surname)",
    "@odata.nextLink": f"{BASE}/v1.0/users/delta?$skiptoken=oEBwdSP6uehIAxQOWq_3Ksh_TLol6KIm",
    "value": [
        {"displayName": "Cameron White", "givenName": "Cameron", "surname": "White",
         "id": "ffff7b1a-13ef-4e5e-8d4d-8a6a0e5e4b33", "accountEnabled": True,
         "mail": "cameron@contoso.com"},
        {"id": "86462606-fde0-4fc4-9e0c-a20eb73e54c6", "@removed": {"reason": "deleted"}},
        {"id": "2e8d2a0c-5a2b-4b7d-8e0a-4d7b2f0d5c11", "@removed": {"reason": "changed"}},
    ],
}
USERS_DELTA_PAGE_2 = {
    "@odata.context": f"{BASE}/v1.0/$metadata#users(displayName,givenName,surname)",
    "@odata.deltaLink": f"{BASE}/v1.0/users/delta?$deltatoken=oEcOySpF_hWYmTIUZBOIfPzcwisr_rPe",
    "value": [
        # G-USER: a guest who has not redeemed the invitation
        {"id": "5b1f1c3a-8e2a-4f7c-a0e3-1c2d3e4f5a6b", "displayName": "Bo Partner",
         "userPrincipalName": "bo_partner.example#EXT#@contoso.onmicrosoft.com",
         "mail": None, "otherMails": ["bo@partner.example"], "userType": "Guest",
         "externalUserState": "PendingAcceptance", "accountEnabled": True},
    ],
}

# G-GDELTA: one group whose members@delta continues on the next page
GROUPS_DELTA_PAGE_1 = {
    "@odata.context": f"{BASE}/v1.0/$metadata#groups",
    "@odata.nextLink": f"{BASE}/v1.0/groups/delta?$skiptoken=pqwSUjGYvb3jQpbwVAwEL7yuI3dU1LecfkkfLPtnIjvB",
    "value": [{"displayName": "TestGroup1", "id": "184e0d4e-e9c5-4d25-bd7d-b6bbd4d5e2b3",
               "members@delta": [
                   {"@odata.type": "#microsoft.graph.user", "id": "ffff7b1a-13ef-4e5e-8d4d-8a6a0e5e4b33"},
                   {"@odata.type": "#microsoft.graph.user", "id": "632f8cd8-fa4e-4bd6-8c07-6a1dbdea8a8a",
                    "@removed": {"reason": "deleted"}},
               ]}],
}
GROUPS_DELTA_PAGE_2 = {
    "@odata.context": f"{BASE}/v1.0/$metadata#groups",
    "@odata.deltaLink": f"{BASE}/v1.0/groups/delta?$deltatoken=sZwAFZibx-LQOdZIo1hHhmmDhHzCY0Hs6snoIHJCSIfCHdqKdWNZ2VX3kErpyna9GygROwBk-rqWWMFxJC3pw",
    "value": [{"displayName": "TestGroup1", "id": "184e0d4e-e9c5-4d25-bd7d-b6bbd4d5e2b3",
               "members@delta": [
                   {"@odata.type": "#microsoft.graph.group", "id": "7c1d2e3f-4a5b-6c7d-8e9f-0a1b2c3d4e5f"},
                   {"@odata.type": "#microsoft.graph.device", "id": "a1b2c3d4-0000-4000-8000-000000000001"},
               ]},
              {"id": "0b5c1a7e-3c2d-4e5f-8a9b-0c1d2e3f4a5b", "@removed": {"reason": "deleted"}}],
}

# G-MEMBERS: a group's members of every directoryObject kind
GROUP_MEMBERS = {
    "@odata.context": f"{BASE}/v1.0/$metadata#directoryObjects",
    "value": [
        {"@odata.type": "#microsoft.graph.user", "id": "11111111-0000-4000-8000-000000000001"},
        {"@odata.type": "#microsoft.graph.group", "id": "11111111-0000-4000-8000-000000000002"},
        {"@odata.type": "#microsoft.graph.device", "id": "11111111-0000-4000-8000-000000000003"},
        {"@odata.type": "#microsoft.graph.servicePrincipal",
         "id": "11111111-0000-4000-8000-000000000004"},
        {"@odata.type": "#microsoft.graph.orgContact", "id": "11111111-0000-4000-8000-000000000005"},
    ],
}
KEPT_MEMBER_TYPES = {"#microsoft.graph.user", "#microsoft.graph.group"}

# G-OVERVIEW
RESYNC_410_HEADERS = {"Location": f"{BASE}/v1.0/users/delta?$deltatoken="}
SYNC_STATE_NOT_FOUND = {"error": {
    "code": "syncStateNotFound",
    "message": "The sync state generation is not found. The delta token is expired and data "
               "must be synchronized again.",
    "innerError": {"date": "2020-08-11T10:25:23", "request-id": "2b9e6f3a-0000-4000-8000-0000000000aa"}}}

# G-THROTTLE
THROTTLED_HEADERS = {"Retry-After": "5", "request-id": "3f1e2d4c-0000-4000-8000-0000000000bb",
                     "client-request-id": "3f1e2d4c-0000-4000-8000-0000000000bb"}
THROTTLED_BODY = {"error": {
    "code": "TooManyRequests", "message": "Too many requests from Identifier:... under category:...",
    "innerError": {"date": "2022-12-12T09:30:11", "request-id": "3f1e2d4c-0000-4000-8000-0000000000bb",
                   "client-request-id": "3f1e2d4c-0000-4000-8000-0000000000bb"}}}
