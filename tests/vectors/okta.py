"""Okta Management API shapes.

S-SPEC: okta/okta-sdk-python ``openapi/api.yaml`` (commit f68509793adefde945ab53ff38f83fab578e3966,
"Okta Admin Management" 5.1.0): ``ListUsersResponse`` example, ``UserStatus`` enum,
``ErrorTooManyRequests`` example, the group examples.
S-ADPROFILE: okta/okta-sdk-python ``docs/OktaActiveDirectoryGroupProfile.md`` (the profile of
an AD-sourced ``APP_GROUP``, objectClass ``okta:windows_security_principal``).
S-RL: okta/okta-developer-docs ``reference/rl-best-practices/index.md`` (rate-limit headers).
"""

# S-SPEC ListUsersResponse: activated/statusChanged null, profile fields null
USER_WITH_NULLS = {
    "id": "00u118oQYT4TBTemp0g4", "status": "ACTIVE", "created": "2022-04-04T15:56:05.000Z",
    "activated": None, "statusChanged": None, "lastLogin": "2022-05-04T19:50:52.000Z",
    "lastUpdated": "2022-05-05T18:15:44.000Z", "passwordChanged": "2022-04-04T16:00:22.000Z",
    "type": {"id": "oty1162QAr8hJjTaq0g4"},
    "profile": {"firstName": "Alice", "lastName": "Smith", "mobilePhone": None,
                "secondEmail": None, "login": "alice.smith@example.com",
                "email": "alice.smith@example.com"},
    "credentials": {"password": {}, "provider": {"type": "OKTA", "name": "OKTA"}},
    "_links": {"self": {"href": "http://your-subdomain.okta.com/api/v1/users/00u118oQYT4TBGuay0g4"}},
}

# S-SPEC components.schemas.UserStatus, and what each becomes in Split (docs/sources/okta.md §3)
STATUSES = {"ACTIVE": True, "PASSWORD_EXPIRED": True, "LOCKED_OUT": True, "RECOVERY": True,
            "SUSPENDED": False, "DEPROVISIONED": False, "STAGED": None, "PROVISIONED": None}

# S-SPEC group example (OKTA_GROUP)
OKTA_GROUP = {
    "id": "00g1emaKYZTWRYYRRTSK", "created": "2015-02-06T10:11:28.000Z",
    "lastUpdated": "2015-10-05T19:16:43.000Z", "lastMembershipUpdated": "2015-11-28T19:15:32.000Z",
    "objectClass": ["okta:user_group"], "type": "OKTA_GROUP",
    "profile": {"name": "West Coast users", "description": "All users West of The Rockies"},
    "_links": {"users": {"href": "https://{yourOktaDomain}/api/v1/groups/00g1emaKYZTWRYYRRTSK/users"}},
}

# S-SPEC / S-ADPROFILE: an AD-sourced group (APP_GROUP), its profile and its source app
APP_GROUP = {
    "id": "00gbso71miOMjxHRW0h7", "created": "2016-04-13T14:38:34.000Z",
    "lastUpdated": "2016-04-13T14:38:34.000Z", "lastMembershipUpdated": "2016-04-13T14:38:34.000Z",
    "objectClass": ["okta:windows_security_principal"], "type": "APP_GROUP",
    "profile": {"name": "Engineering Users", "description": "corp.example.com/Engineering Users",
                "groupType": "Security", "samAccountName": "Engineering Users",
                "objectSid": "S-1-5-21-717838489-685202119-709183397-1177",
                "groupScope": "Global",
                "dn": "CN=Engineering Users,OU=Engineering,DC=corp,DC=example,DC=com",
                "windowsDomainQualifiedName": "CORP\\Engineering Users",
                "externalId": "OZJdWdONCU6h7WjQKp+LPA=="},
    "source": {"id": "0oa2v0el0gP90aqjJ0g7"},
    "_links": {"users": {"href": "https://{yourOktaDomain}/api/v1/groups/00gbso71miOMjxHRW0h7/users"}},
}

# S-SPEC: the built-in "Everyone" group
BUILT_IN = {
    "id": "00g1fanEFIQHMQQJMHZP", "created": "2015-08-15T19:15:17.000Z",
    "lastUpdated": "2015-08-15T19:15:17.000Z", "lastMembershipUpdated": "2015-11-18T04:02:19.000Z",
    "objectClass": ["okta:user_group"], "type": "BUILT_IN",
    "profile": {"name": "Everyone", "description": "All users in your organization"},
    "_links": {"users": {"href": "https://{yourOktaDomain}/api/v1/groups/00g1fanEFIQHMQQJMHZP/users"}},
}

# S-SPEC ErrorTooManyRequests; S-RL headers of a throttled answer
THROTTLED_BODY = {"errorCode": "E0000047",
                  "errorSummary": "API call exceeded rate limit due to too many requests.",
                  "errorLink": "E0000047", "errorId": "sampleQPivGUj_ND5v78vbYWW",
                  "errorCauses": []}
THROTTLED_HEADERS = ("X-Rate-Limit-Limit", "X-Rate-Limit-Remaining", "X-Rate-Limit-Reset")
