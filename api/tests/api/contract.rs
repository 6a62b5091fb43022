//! The OpenAPI document says exactly what the server does: which fields are `null`, which ids a
//! path takes, where 413 and 405 come from. Responses of a real flow are checked against the
//! document served at `/openapi.json`.

use poem::http::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{CGM, Reply, TestApi};

async fn document(app: &TestApi) -> Value {
    let reply = app.send(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(reply.status, StatusCode::OK);
    reply.json()
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("unexpected reference {reference}"));
            &doc["components"]["schemas"][name]
        }
        None => schema,
    }
}

/// Checks `value` against `schema`, as far as this API's schemas go (types, `nullable`,
/// `required`, no undeclared properties, enums, `allOf`); the error says where it failed.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if value.is_null() {
        return if schema["nullable"] == true {
            Ok(())
        } else {
            Err(format!(
                "{at} is null but its schema is not nullable: {schema}"
            ))
        };
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        conforms(doc, part, value, at)?;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Err(format!("{at} = {value} is not one of {allowed:?}"));
    }
    if let Some(options) = schema["anyOf"].as_array().or(schema["oneOf"].as_array()) {
        return match options.iter().any(|o| conforms(doc, o, value, at).is_ok()) {
            true => Ok(()),
            false => Err(format!("{at} = {value} is none of {options:?}")),
        };
    }
    let wrong_type = || Err(format!("{at} = {value} is not a {}", schema["type"]));
    match schema["type"].as_str() {
        Some("object") => {
            let Some(object) = value.as_object() else {
                return wrong_type();
            };
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap();
                if !object.contains_key(name) {
                    return Err(format!("{at}.{name} is required but missing"));
                }
            }
            for (name, field) in object {
                match schema["properties"].get(name) {
                    Some(field_schema) => {
                        conforms(doc, field_schema, field, &format!("{at}.{name}"))?
                    }
                    None if schema.get("additionalProperties").is_some() => {}
                    None => return Err(format!("{at}.{name} is not in the schema")),
                }
            }
        }
        Some("array") => {
            let Some(items) = value.as_array() else {
                return wrong_type();
            };
            for (i, item) in items.iter().enumerate() {
                conforms(doc, &schema["items"], item, &format!("{at}[{i}]"))?;
            }
        }
        Some("string") if !value.is_string() => return wrong_type(),
        Some("integer") if !(value.is_i64() || value.is_u64()) => return wrong_type(),
        Some("number") if !value.is_number() => return wrong_type(),
        Some("boolean") if !value.is_boolean() => return wrong_type(),
        _ => {}
    }
    Ok(())
}

/// Asserts that the document declares `reply` for `method template`, and that its body
/// conforms to the declared schema.
#[track_caller]
fn assert_documented(doc: &Value, method: &str, template: &str, reply: &Reply) {
    let status = reply.status.as_u16().to_string();
    let declared = &doc["paths"][template][method]["responses"][&status];
    assert!(
        declared.is_object(),
        "{method} {template} answered an undocumented {status}: {}",
        reply.text
    );
    let media_type = |content_type: &str| content_type.split(';').next().unwrap().trim().to_owned();
    let content_type = media_type(reply.content_type());
    let schema = declared["content"]
        .as_object()
        .into_iter()
        .flatten()
        .find(|(declared, _)| media_type(declared) == content_type)
        .map(|(_, content)| &content["schema"]);
    let Some(schema) = schema else {
        panic!("{method} {template} {status}: `{content_type}` is not documented: {declared}");
    };
    if content_type.ends_with("json")
        && let Err(err) = conforms(doc, schema, &reply.json(), "$")
    {
        panic!("{method} {template} {status}: {err}\n{}", reply.text);
    }
}

#[tokio::test]
async fn every_property_is_always_sent_and_those_without_a_value_are_nullable() {
    let app = TestApi::spawn().await;
    let doc = document(&app).await;
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for (name, schema) in schemas {
        let required: Vec<&str> = schema["required"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        for (property, _) in schema["properties"].as_object().into_iter().flatten() {
            assert!(
                required.contains(&property.as_str()),
                "{name}.{property} is not required: every field is always sent (null when it \
                 has no value)"
            );
        }
    }
    // Request bodies refuse unknown fields, and say so.
    assert_eq!(schemas["NewConnection"]["additionalProperties"], false);
    // The ones that can be null say so.
    let connection = &schemas["Connection"]["properties"];
    for field in [
        "lastError",
        "failingSince",
        "nextSyncAt",
        "tokenExpiresAt",
        "scope",
    ] {
        assert_eq!(connection[field]["nullable"], true, "Connection.{field}");
    }
    assert_eq!(
        schemas["DataPage"]["properties"]["nextCursor"]["nullable"],
        true
    );
    assert_eq!(
        schemas["ConnectionEvent"]["properties"]["from"]["nullable"],
        true
    );
    for field in ["id", "userId", "state", "version", "createdAt"] {
        assert!(
            connection[field]["nullable"].is_null(),
            "Connection.{field}"
        );
    }
}

#[tokio::test]
async fn responses_of_a_whole_flow_conform_to_the_document() {
    let app = TestApi::spawn().await;
    let doc = document(&app).await;
    let ops = app.ops();
    let alice = app.user("alice");
    let check = |method: &str, template: &str, reply: &Reply| {
        assert_documented(&doc, method, template, reply)
    };

    check(
        "get",
        "/healthz",
        &app.send(Method::GET, "/healthz", None, None).await,
    );
    check(
        "get",
        "/readyz",
        &app.send(Method::GET, "/readyz", None, None).await,
    );
    check(
        "get",
        "/v1/partners",
        &app.get("/v1/partners", &alice).await,
    );

    // A new connection: nearly everything is still null.
    let created = app.connect("alice", CGM).await;
    assert_eq!(created.status, StatusCode::CREATED);
    check("post", "/v1/users/{userId}/connections", &created);
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let one = format!("/v1/connections/{id}");
    check("get", "/v1/connections/{id}", &app.get(&one, &alice).await);
    let list = app.get("/v1/users/alice/connections", &alice).await;
    check("get", "/v1/users/{userId}/connections", &list);
    let events = app.get(&format!("{one}/events"), &alice).await;
    assert!(events.json()[0]["from"].is_null());
    check("get", "/v1/connections/{id}/events", &events);
    let authorize = app.post(&format!("{one}/authorize"), &alice).await;
    check("post", "/v1/connections/{id}/authorize", &authorize);
    let sync = app.post(&format!("{one}/sync"), &alice).await;
    assert_eq!(sync.status, StatusCode::CONFLICT);
    check("post", "/v1/connections/{id}/sync", &sync);
    let refresh = app.post(&format!("{one}/refresh"), &ops).await;
    assert_eq!(refresh.json()["outcome"], "not_needed");
    check("post", "/v1/connections/{id}/refresh", &refresh);

    // An active connection, its data, then a disconnect and its pending revocation.
    let bob = app.user("bob");
    let active = app.connect_fully("bob").await;
    let active_path = format!("/v1/connections/{active}");
    check(
        "get",
        "/v1/connections/{id}",
        &app.get(&active_path, &bob).await,
    );
    let sync = app.post(&format!("{active_path}/sync"), &bob).await;
    assert_eq!(sync.status, StatusCode::ACCEPTED);
    check("post", "/v1/connections/{id}/sync", &sync);
    let limited = app.post(&format!("{active_path}/sync"), &bob).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    check("post", "/v1/connections/{id}/sync", &limited);
    let data = app.get("/v1/users/bob/data?limit=5", &bob).await;
    assert!(data.json()["nextCursor"].is_null());
    check("get", "/v1/users/{userId}/data", &data);
    let refresh = app.post(&format!("{active_path}/refresh"), &ops).await;
    check("post", "/v1/connections/{id}/refresh", &refresh);
    let gone = app.post(&format!("{active_path}/disconnect"), &bob).await;
    check("post", "/v1/connections/{id}/disconnect", &gone);
    let revocations = app.get(&format!("{active_path}/revocations"), &ops).await;
    assert_eq!(revocations.json().as_array().unwrap().len(), 1);
    check("get", "/v1/connections/{id}/revocations", &revocations);
    check(
        "get",
        "/v1/ops/alerts",
        &app.get("/v1/ops/alerts", &ops).await,
    );

    // Problems.
    let missing = "/v1/connections/0190f5e2-7b1c-7d3e-8f00-0123456789ab";
    check(
        "get",
        "/v1/connections/{id}",
        &app.get(missing, &alice).await,
    );
    check(
        "get",
        "/v1/connections/{id}",
        &app.get("/v1/connections/x", &alice).await,
    );
    let anonymous = app.send(Method::GET, missing, None, None).await;
    check("get", "/v1/connections/{id}", &anonymous);
    let forbidden = app.get("/v1/users/bob/connections", &alice).await;
    check("get", "/v1/users/{userId}/connections", &forbidden);
    let again = app.connect("bob", CGM).await;
    check("post", "/v1/users/{userId}/connections", &again);
}

#[tokio::test]
async fn bulk_answers_conform_to_the_document() {
    let app = TestApi::spawn().await;
    let doc = document(&app).await;
    let ops = app.ops();
    app.connect_fully("bob").await;
    let template = "/v1/ops/bulk/{action}";
    let dry_run = r#"{"filter": {"state": "active"}, "reason": "maintenance", "dryRun": true}"#;
    let plan = app.post_json("/v1/ops/bulk/pause", &ops, dry_run).await;
    assert_eq!(plan.status, StatusCode::OK, "{}", plan.text);
    assert_documented(&doc, "post", template, &plan);
    assert_eq!(plan.json()["count"], 1);
    let token = plan.json()["confirmationToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let confirm = format!(r#"{{"confirmationToken": "{token}"}}"#);
    let result = app.post_json("/v1/ops/bulk/pause", &ops, &confirm).await;
    assert_eq!(result.status, StatusCode::OK, "{}", result.text);
    assert_documented(&doc, "post", template, &result);
    assert_eq!(result.json()["acted"], 1);
    for (path, body, status) in [
        ("/v1/ops/bulk/resume", confirm.as_str(), 409),
        ("/v1/ops/bulk/pause", r#"{"confirmationToken": "x"}"#, 404),
        ("/v1/ops/bulk/nope", dry_run, 400),
        ("/v1/ops/bulk/pause", r#"{"filter": {}}"#, 400),
    ] {
        let reply = app.post_json(path, &ops, body).await;
        assert_eq!(
            reply.status.as_u16(),
            status,
            "{path} {body}: {}",
            reply.text
        );
        assert_documented(&doc, "post", template, &reply);
    }
}

/// Fills a path template with ids that exist.
fn concrete(template: &str, id: &str) -> String {
    template
        .replace("{userId}", "alice")
        .replace("{id}", id)
        .replace("{partner}", CGM)
        .replace("{action}", "pause")
}

#[tokio::test]
async fn path_ids_are_declared_as_the_server_reads_them() {
    let app = TestApi::spawn().await;
    let doc = document(&app).await;
    let mut seen = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                if parameter["in"] != "path" {
                    continue;
                }
                let schema = &parameter["schema"];
                match parameter["name"].as_str().unwrap() {
                    "id" => assert_eq!(schema["format"], "uuid", "{method} {path}"),
                    "userId" => {
                        assert_eq!(schema["pattern"], "^[A-Za-z0-9_-]+$", "{method} {path}");
                        assert_eq!(
                            (&schema["minLength"], &schema["maxLength"]),
                            (&Value::from(1), &Value::from(64)),
                            "{method} {path}"
                        );
                    }
                    "invitationId" => assert_eq!(schema["format"], "uuid", "{method} {path}"),
                    "clinicId" => {
                        assert_eq!(schema["pattern"], "^[A-Za-z0-9._-]+$", "{method} {path}");
                        assert_eq!(
                            (&schema["minLength"], &schema["maxLength"]),
                            (&Value::from(1), &Value::from(128)),
                            "{method} {path}"
                        );
                    }
                    "partner" => {}
                    "action" => assert!(
                        schema["$ref"].is_string() || schema["enum"].is_array(),
                        "{method} {path}: {schema}"
                    ),
                    other => panic!("{method} {path}: undeclared rule for `{other}`"),
                }
                seen += 1;
                let responses = &operation["responses"];
                assert!(responses["400"].is_object() || path.contains("{partner}"));
            }
        }
    }
    assert!(seen >= 10, "{seen}");
    // The longest id the pattern allows is accepted, one more is the documented 400.
    let ops = app.ops();
    let longest = "u".repeat(64);
    let reply = app
        .get(&format!("/v1/users/{longest}/connections"), &ops)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let reply = app
        .get(&format!("/v1/users/{longest}u/connections"), &ops)
        .await;
    assert_documented(&doc, "get", "/v1/users/{userId}/connections", &reply);
    reply.assert_problem(400, "invalid_user_id");
}

#[tokio::test]
async fn every_post_documents_and_answers_413() {
    let app = TestApi::spawn_with(None, 64).await;
    let doc = document(&app).await;
    let (id, _) = app.start("alice", CGM).await;
    let big = format!(r#"{{"partner":"{}"}}"#, "x".repeat(100));
    let mut posts = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let declared = &operation["responses"]["413"]["content"]["application/problem+json"];
            if method != "post" {
                // GET bodies are never read, so a GET never answers 413.
                assert!(declared.is_null(), "{method} {template} documents 413");
                continue;
            }
            posts += 1;
            assert!(
                declared.is_object(),
                "{method} {template} does not document 413"
            );
            let reply = app
                .post_json(&concrete(template, &id), &app.ops(), &big)
                .await;
            reply.assert_problem(413, "payload_too_large");
            assert_documented(&doc, method, template, &reply);
        }
    }
    assert_eq!(posts, 21);
    // A GET with a body answers as without one.
    let reply = app
        .send(
            Method::GET,
            "/v1/partners",
            Some(&app.ops()),
            Some(("application/json", &big)),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
}

#[tokio::test]
async fn wrong_methods_are_405_problems_with_allow() {
    let app = TestApi::spawn().await;
    let doc = document(&app).await;
    let (id, _) = app.start("alice", CGM).await;
    let ops = app.ops();
    let mut checked = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        let documented: Vec<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        let mut expected: Vec<&str> = ["GET", "HEAD", "POST"]
            .into_iter()
            .filter(|m| {
                documented.iter().any(|d| d == m)
                    || (*m == "HEAD" && documented.iter().any(|d| d == "GET"))
            })
            .collect();
        expected.dedup();
        let path = concrete(template, &id);
        for method in [
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            if documented.iter().any(|d| d == method.as_str()) {
                continue;
            }
            let reply = app.send(method.clone(), &path, Some(&ops), None).await;
            reply.assert_problem(405, "method_not_allowed");
            assert_eq!(
                reply.header("allow"),
                Some(expected.join(", ").as_str()),
                "{method} {path}"
            );
            assert_eq!(reply.header("cache-control"), Some("no-store"));
            assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
            checked += 1;
        }
    }
    assert!(checked > 40, "{checked}");
}

#[tokio::test]
async fn invalid_utf8_in_a_path_is_answered_by_the_route() {
    let app = TestApi::spawn().await;
    let ops = app.ops();
    for (path, code) in [
        ("/v1/users/%FF/connections", "invalid_user_id"),
        ("/v1/users/a%c3/data", "invalid_user_id"),
        ("/v1/connections/%FF", "invalid_connection_id"),
        ("/v1/connections/%FF%FE/events", "invalid_connection_id"),
    ] {
        let reply = app.get(path, &ops).await;
        reply.assert_problem(400, code);
        assert_eq!(reply.header("cache-control"), Some("no-store"), "{path}");
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        // Authentication still comes first.
        app.send(Method::GET, path, None, None)
            .await
            .assert_problem(401, "unauthenticated");
    }
    // The callback answers with its page whatever the partner segment or query carries.
    let page = app.callback("%FF", "state=x&code=y").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.text);
    assert!(page.content_type().starts_with("text/html"));
    assert!(page.text.contains("unknown_partner"), "{}", page.text);
    let page = app.callback(CGM, "state=%FF&code=%FE%FD&iss=%c3").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.text);
    assert!(page.content_type().starts_with("text/html"));
    assert!(page.text.contains("invalid_state"), "{}", page.text);
}
