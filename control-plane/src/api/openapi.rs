//! `GET /v1/openapi.json`: the API described from the handlers' own
//! annotations, so the document cannot drift from the code (a test also
//! checks every documented operation against the router).

use serde_json::{Value, json};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Outpost control plane",
        description = "Tenants deploy WebAssembly workers; edge nodes follow the desired state.",
        version = "1"
    ),
    paths(
        super::tenants::create,
        super::tenants::list,
        super::tenants::whoami,
        super::purge::purge,
        super::tenants::set_limits,
        super::tenants::set_domains,
        super::tenants::set_quotas,
        super::tenants::disable,
        super::tenants::enable,
        super::tenants::delete,
        super::tokens::create_as_admin,
        super::tokens::create,
        super::tokens::list,
        super::tokens::revoke,
        super::apps::create,
        super::apps::list,
        super::apps::show,
        super::apps::delete,
        super::apps::set_routes,
        super::apps::set_outbound,
        super::apps::set_env,
        super::apps::patch_env,
        super::apps::compare_env,
        super::apps::deploy,
        super::apps::deployments,
        super::apps::rollback,
        super::apps::module,
        super::certs::put,
        super::certs::list,
        super::certs::delete,
        super::nodes::report,
        super::logs::ingest,
        super::logs::read,
        super::nodes::list,
        super::node_identities::create,
        super::node_identities::list,
        super::node_identities::revoke,
        super::nodes::rollout,
        crate::watch::watch,
    ),
    components(schemas(
        outpost_proto::ErrorBody,
        outpost_proto::EnvComparison,
        outpost_proto::ErrorDetail,
        outpost_proto::Limits,
        outpost_proto::CreateTenant,
        outpost_proto::TenantCreated,
        outpost_proto::Tenant,
        outpost_proto::CallerKind,
        outpost_proto::CachePurge,
        outpost_proto::PurgeResult,
        outpost_proto::PurgeRecord,
        outpost_proto::RecentPurges,
        outpost_proto::Whoami,
        outpost_proto::SetDomains,
        outpost_proto::TenantQuotas,
        outpost_proto::TenantUsage,
        outpost_proto::CreateToken,
        outpost_proto::TokenCreated,
        outpost_proto::TokenInfo,
        outpost_proto::CreateApp,
        outpost_proto::App,
        outpost_proto::SetRoutes,
        outpost_proto::SetOutbound,
        outpost_proto::Deployment,
        outpost_proto::Rollback,
        outpost_proto::AppSpec,
        outpost_proto::Snapshot,
        outpost_proto::CertSpec,
        outpost_proto::CertUpload,
        outpost_proto::CertInfo,
        outpost_proto::Delta,
        outpost_proto::WatchEvent,
        outpost_proto::NodeReport,
        outpost_proto::NodeStatus,
        outpost_proto::CreateNodeIdentity,
        outpost_proto::NodeIdentityCreated,
        outpost_proto::NodeIdentity,
        outpost_proto::Rollout,
        outpost_proto::Unavailable,
        outpost_proto::GuestLogLine,
    )),
    modifiers(&BearerTokens)
)]
pub struct ApiDoc;

/// The three kinds of bearer token: admin, tenant (`bearer`), node (the
/// shared node token or a node's own identity).
struct BearerTokens;

impl Modify for BearerTokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["admin", "bearer", "node"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The handler.
pub async fn document() -> axum::Json<Value> {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    axum::Json(DOC.get_or_init(document_json).clone())
}

/// `GET /v1/manifest.schema.json`: the JSON Schema of `outpost.toml`
/// (editors that read `#:schema` comments or Taplo's catalog check the
/// file with it as it is typed). The app name carries the same pattern
/// the API checks.
pub async fn manifest_schema() -> axum::Json<Value> {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    axum::Json(DOC.get_or_init(manifest_schema_json).clone())
}

/// The manifest's schema as served.
pub fn manifest_schema_json() -> Value {
    let mut schema = serde_json::to_value(schemars::schema_for!(outpost_proto::manifest::Manifest))
        .expect("the schema serializes");
    if let Some(name) = schema.pointer_mut("/$defs/ManifestApp/properties/name") {
        name["pattern"] = Value::from(NAME);
    }
    schema
}

/// The document as served: what utoipa derives from the handlers, plus
/// what their annotations cannot say (see [`refine`]).
pub fn document_json() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    refine(&mut doc);
    doc
}

/// A tenant, app or node name, as `check_name` accepts it.
const NAME: &str = "^[a-z0-9][a-z0-9-]{0,62}$";
/// One hostname label, as the route parser accepts it.
const LABEL: &str = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
/// What may not appear in a route's path prefix: `?#%\` and the
/// characters Rust's `char::is_whitespace` calls whitespace (spelled out:
/// a regex `\s` disagrees with it on a few control characters).
const NOT_IN_PREFIX: &str = "/?#%\\\\\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
/// A TCP port, 1-65535.
const PORT: &str =
    "(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";

fn host() -> String {
    format!("{LABEL}(?:\\.{LABEL})*\\.?")
}

/// A route: `HOST` or `HOST/PREFIX`, where no prefix segment is empty,
/// `.` or `..` (trailing slashes are dropped).
fn route_pattern() -> String {
    let c = format!("[^{NOT_IN_PREFIX}]");
    let c_no_dot = format!("[^{NOT_IN_PREFIX}.]");
    let segment = format!("(?:{c_no_dot}{c}*|\\.{c_no_dot}{c}*|\\.\\.{c}+)");
    format!("^{}(?:/{segment})*/*$", host())
}

/// The constraints the handlers check that JSON Schema can state, the
/// errors every operation can answer, and the true content types.
/// Semantic checks beyond this (a certificate's contents, a route owned
/// by another tenant) are documented as their 400/409 answers.
fn refine(doc: &mut Value) {
    unsigned_integers(doc);
    let schemas = &mut doc["components"]["schemas"];
    for (schema, field) in [
        ("CreateTenant", "name"),
        ("CreateApp", "name"),
        ("CreateNodeIdentity", "name"),
    ] {
        let f = &mut schemas[schema]["properties"][field];
        f["pattern"] = json!(NAME);
    }
    let route = json!({
        "type": "string",
        "pattern": route_pattern(),
        "maxLength": super::apps::MAX_ROUTE_CHARS
    });
    let outbound = json!({
        "type": "string",
        "pattern": format!("^{}(?::{PORT})?$", host()),
        "maxLength": 260
    });
    schemas["CreateApp"]["properties"]["routes"]["items"] = route.clone();
    schemas["CreateApp"]["properties"]["routes"]["uniqueItems"] = json!(true);
    schemas["CreateApp"]["properties"]["allow_outbound"]["items"] = outbound.clone();
    schemas["CreateApp"]["properties"]["allow_outbound"]["maxItems"] = json!(64);
    schemas["SetRoutes"]["properties"]["routes"]["items"] = route;
    schemas["SetRoutes"]["properties"]["routes"]["uniqueItems"] = json!(true);
    schemas["SetOutbound"]["properties"]["hosts"]["items"] = outbound;
    schemas["SetOutbound"]["properties"]["hosts"]["maxItems"] = json!(64);
    // Limits that would fail every request are refused (`check_limits`).
    for field in ["fuel", "memory_mib", "timeout_ms", "max_concurrency"] {
        schemas["Limits"]["properties"][field]["minimum"] = json!(1);
    }
    schemas["Limits"]["properties"]["memory_mib"]["maximum"] = json!(4096);

    let env_name = json!({"type": "string", "pattern": "^[^=\\u0000]+$"});
    let env_value = "^[^\\u0000]*$";
    let paths = &mut doc["paths"];
    let env = &mut paths["/v1/apps/{app}/env"];
    let put = &mut env["put"]["requestBody"]["content"]["application/json"]["schema"];
    put["propertyNames"] = env_name.clone();
    put["additionalProperties"]["pattern"] = json!(env_value);
    let patch = &mut env["patch"]["requestBody"]["content"]["application/json"]["schema"];
    patch["propertyNames"] = env_name;
    patch["additionalProperties"] = json!({"anyOf": [
        {"type": "string", "pattern": env_value},
        {"type": "null"}
    ]});

    let binary = json!({"type": "string", "format": "binary"});
    paths["/v1/apps/{app}/deployments"]["post"]["requestBody"]["content"] =
        json!({"application/wasm": {"schema": binary}});
    paths["/v1/modules/{digest}"]["get"]["responses"]["200"]["content"] =
        json!({"application/wasm": {"schema": binary}});
    // Both streams are newline-delimited JSON, one documented object a line.
    for path in ["/v1/apps/{app}/logs", "/v1/nodes/watch"] {
        let content = &mut paths[path]["get"]["responses"]["200"]["content"];
        if let Some(schema) = content
            .as_object_mut()
            .and_then(|c| c.remove("application/json"))
        {
            content["application/x-ndjson"] = schema;
        }
    }

    let hostname = format!("^(?:\\*\\.{LABEL}(?:\\.{LABEL})+|{LABEL}(?:\\.{LABEL})*)\\.?$");
    for (path, name, pattern) in [
        ("/v1/certificates/{hostname}", "hostname", hostname.as_str()),
        ("/v1/nodes/{node}/status", "node", NAME),
        ("/v1/nodes/{node}/logs", "node", NAME),
        ("/v1/nodes/identities/{name}", "name", NAME),
    ] {
        for op in operations(&mut paths[path]) {
            for param in op["parameters"].as_array_mut().into_iter().flatten() {
                if param["name"] == name {
                    param["schema"]["pattern"] = json!(pattern);
                    param["schema"]["maxLength"] = json!(255);
                }
            }
        }
    }
    common_errors(paths);
}

/// utoipa writes Rust's unsigned integers as `int64`/`int32` with
/// `minimum: 0`, whose implied maximum is the signed one: a client would
/// think 2^63 invalid when the server takes it. Say what they are.
fn unsigned_integers(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.get("minimum") == Some(&json!(0)) {
                let max = match map.get("format").and_then(Value::as_str) {
                    Some("int64") => Some(("uint64", json!(u64::MAX))),
                    Some("int32") => Some(("uint32", json!(u32::MAX))),
                    _ => None,
                };
                if let Some((format, max)) = max {
                    map.insert("format".into(), json!(format));
                    map.insert("maximum".into(), max);
                }
            }
            map.values_mut().for_each(unsigned_integers);
        }
        Value::Array(items) => items.iter_mut().for_each(unsigned_integers),
        _ => {}
    }
}

fn operations(item: &mut Value) -> impl Iterator<Item = &mut Value> {
    item.as_object_mut()
        .into_iter()
        .flat_map(|m| m.iter_mut())
        .filter(|(k, _)| ["get", "put", "post", "patch", "delete"].contains(&k.as_str()))
        .map(|(_, op)| op)
}

/// Answers any operation can give besides its own: 400 for a body or
/// query that does not parse, 413 for a JSON body over axum's 2 MiB,
/// 401/429 from the token check (429 carries `Retry-After`), 503 when the
/// store fails and 507 when it is full (writes).
fn common_errors(paths: &mut Value) {
    let error = |description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        })
    };
    let mut too_many = error("Too many unknown tokens from this address: wait and retry");
    too_many["headers"] = json!({"Retry-After": {
        "description": "Seconds until the address may try again",
        "required": true,
        "schema": {"type": "integer", "minimum": 1}
    }});
    let Some(paths) = paths.as_object_mut() else {
        return;
    };
    for item in paths.values_mut() {
        let has_path_params = item
            .as_object()
            .is_some_and(|m| m.contains_key("parameters"));
        for op in operations(item) {
            let takes_input = op.get("requestBody").is_some()
                || has_path_params
                || op["parameters"].as_array().is_some_and(|p| !p.is_empty());
            let json_body = op["requestBody"]["content"]
                .get("application/json")
                .is_some();
            let writes = op.get("requestBody").is_some()
                || op["responses"].get("204").is_some()
                || op["responses"].get("201").is_some();
            let responses = op["responses"].as_object_mut().expect("responses");
            let mut add = |status: &str, body: Value| {
                responses.entry(status).or_insert(body);
            };
            if takes_input {
                add("400", error("The request does not parse or is refused"));
            }
            if json_body {
                add("413", error("The body is too large"));
            }
            add("401", error("No or unknown bearer token"));
            add("403", error("A valid token of another kind"));
            add("429", too_many.clone());
            add(
                "503",
                error("The store cannot answer right now; nothing changed"),
            );
            if writes {
                add("507", error("The store is full; nothing changed"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation of the served document, with its path.
    fn every_operation(doc: &Value) -> Vec<(String, String, Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                out.push((method.clone(), path.clone(), op.clone()));
            }
        }
        out
    }

    #[test]
    fn every_error_answer_is_documented_with_the_error_body() {
        let doc = document_json();
        for (method, path, op) in every_operation(&doc) {
            let responses = op["responses"].as_object().unwrap();
            for status in ["401", "403", "429", "503"] {
                assert!(
                    responses.contains_key(status),
                    "{method} {path}: no {status}"
                );
            }
            assert!(
                responses["429"]["headers"]["Retry-After"]["required"] == true,
                "{method} {path}: 429 without Retry-After"
            );
            if op.get("requestBody").is_some() {
                assert!(responses.contains_key("400"), "{method} {path}: no 400");
            }
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }

    #[test]
    fn unsigned_integers_say_how_large_they_may_be() {
        let doc = document_json();
        let limits = &doc["components"]["schemas"]["Limits"]["properties"];
        assert_eq!(limits["fuel"]["maximum"], json!(u64::MAX));
        assert_eq!(limits["fuel"]["minimum"], json!(1));
        assert_eq!(limits["max_concurrency"]["maximum"], json!(u32::MAX));
        assert_eq!(limits["memory_mib"]["maximum"], json!(4096));
        let rollout = &doc["paths"]["/v1/rollout"]["get"]["parameters"][0]["schema"];
        assert_eq!(rollout["format"], "uint64");
        assert_eq!(rollout["maximum"], json!(u64::MAX));
    }

    #[test]
    fn binary_and_streamed_bodies_have_their_real_content_types() {
        let doc = document_json();
        let paths = &doc["paths"];
        let deploy = &paths["/v1/apps/{app}/deployments"]["post"]["requestBody"]["content"];
        assert_eq!(deploy["application/wasm"]["schema"]["format"], "binary");
        let module = &paths["/v1/modules/{digest}"]["get"]["responses"]["200"]["content"];
        assert!(module.get("application/wasm").is_some(), "{module}");
        for path in ["/v1/apps/{app}/logs", "/v1/nodes/watch"] {
            let stream = &paths[path]["get"]["responses"]["200"]["content"];
            assert!(stream.get("application/x-ndjson").is_some(), "{stream}");
            assert!(stream.get("application/json").is_none(), "{stream}");
        }
    }
}
