//! Request routing and the non-watch verbs: discovery, list, get, create, replace, patch, delete.

use super::*;

use std::{collections::HashMap, sync::Arc};

use axum::{
    body::{Body, Bytes},
    extract::{Query, Request, State},
    http::{header, Method, StatusCode},
    response::Response,
};
use base64::Engine as _;
use serde_json::{json, Value};

pub(crate) fn json_response(code: u16, body: &Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

pub(crate) enum Route {
    Version,
    Api,
    Apis,
    ResourceList(String, String),
    Collection {
        res: usize,
        ns: Option<String>,
    },
    Item {
        res: usize,
        ns: Option<String>,
        name: String,
    },
}

pub(crate) fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["version"] => Some(Route::Version),
        ["api"] => Some(Route::Api),
        ["apis"] => Some(Route::Apis),
        ["api", v] => Some(Route::ResourceList(String::new(), v.to_string())),
        ["apis", g, v] => Some(Route::ResourceList(g.to_string(), v.to_string())),
        ["api", v, rest @ ..] => resource_route("", v, rest),
        ["apis", g, v, rest @ ..] => resource_route(g, v, rest),
        _ => None,
    }
}

pub(crate) fn resource_route(group: &str, version: &str, rest: &[&str]) -> Option<Route> {
    if rest.len() >= 3 && rest[0] == "namespaces" {
        if let Some(res) =
            find_resource(group, version, rest[2]).filter(|&r| RESOURCES[r].namespaced)
        {
            let ns = Some(rest[1].to_string());
            return match &rest[3..] {
                [] => Some(Route::Collection { res, ns }),
                [name] | [name, "status"] => Some(Route::Item {
                    res,
                    ns,
                    name: name.to_string(),
                }),
                _ => None,
            };
        }
    }
    let res = find_resource(group, version, rest[0])?;
    match &rest[1..] {
        [] => Some(Route::Collection { res, ns: None }),
        [name] | [name, "status"] if !RESOURCES[res].namespaced => Some(Route::Item {
            res,
            ns: None,
            name: name.to_string(),
        }),
        _ => None,
    }
}

pub(crate) async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let method = parts.method.clone();
    {
        let mut s = shared.lock();
        s.requests.push(RecordedRequest {
            method: method.to_string(),
            path: path.clone(),
            query: parts.uri.query().unwrap_or("").to_string(),
        });
        s.failures.retain(|(_, _, left)| *left != Some(0));
        if let Some((_, code, left)) = s
            .failures
            .iter_mut()
            .find(|(p, _, _)| path.starts_with(p.as_str()))
        {
            let code = *code;
            if let Some(n) = left {
                *n -= 1;
            }
            drop(s);
            return ApiError::new(code, reason_for(code), format!("injected failure {code}"))
                .response();
        }
    }
    let query: HashMap<String, String> = Query::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let body = match axum::body::to_bytes(body, 64 << 20).await {
        Ok(b) => b,
        Err(e) => return ApiError::new(400, "BadRequest", format!("reading body: {e}")).response(),
    };

    let Some(route) = route(&path) else {
        return ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
        .response();
    };
    let result = match (route, &method) {
        (Route::Version, &Method::GET) => Ok(json_response(200, &version_doc())),
        (Route::Api, &Method::GET) => Ok(json_response(
            200,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr.lock().unwrap().map(|a| a.to_string()).unwrap_or_default()}
            ]}),
        )),
        (Route::Apis, &Method::GET) => Ok(json_response(200, &group_list())),
        (Route::ResourceList(g, v), &Method::GET) => {
            resource_list(&g, &v).map(|d| json_response(200, &d))
        }
        (Route::Collection { res, ns }, &Method::GET) => {
            let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
            if watch {
                start_watch(&shared, res, ns, &query)
            } else {
                list(&shared, res, ns, &query)
            }
        }
        (Route::Collection { res, ns }, &Method::POST) => create(&shared, res, ns, &body),
        (Route::Item { res, ns, name }, m) => {
            item(&shared, res, ns, &name, m, &content_type, &body)
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("method {method} not allowed on {path}"),
        )),
    };
    result.unwrap_or_else(|e| e.response())
}

pub(crate) fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

pub(crate) fn version_doc() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

pub(crate) fn group_list() -> Value {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES.iter().filter(|r| !r.group.is_empty()) {
        if !groups.contains(&(r.group, r.version)) {
            groups.push((r.group, r.version));
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, v)| {
            let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
            json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub(crate) fn resource_list(group: &str, version: &str) -> Result<Value, ApiError> {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| {
            json!({
                "name": r.plural,
                "singularName": r.singular,
                "namespaced": r.namespaced,
                "kind": r.kind,
                "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
            })
        })
        .collect();
    if resources.is_empty() {
        return Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Ok(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

pub(crate) fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse::<u64>()
        .map_err(|_| ApiError::new(400, "BadRequest", format!("invalid resource version {s:?}")))
}

pub(crate) fn expired(rv: u64, compacted: u64) -> ApiError {
    ApiError::new(
        410,
        "Expired",
        format!("too old resource version: {rv} ({compacted})"),
    )
}

pub(crate) fn list(
    shared: &Shared,
    res: usize,
    ns: Option<String>,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let def = &RESOURCES[res];
    let filter = Filter::from_query(ns, q)?;
    let limit = match q.get("limit") {
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::new(400, "BadRequest", "invalid limit"))?,
        ),
        None => None,
    }
    .filter(|&l| l > 0);
    let s = shared.lock();
    // Where to start and which revision to report.
    let (list_rv, after): (u64, Option<(String, String)>) = match q
        .get("continue")
        .filter(|c| !c.is_empty())
    {
        Some(token) => {
            let (rv, ns, name) = decode_continue(token)?;
            if rv < s.compacted {
                return Err(ApiError::new(
                    410,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. \
                     You can start a new list without the continue parameter.",
                ));
            }
            (rv, Some((ns, name)))
        }
        None => {
            if let Some(rv) = q
                .get("resourceVersion")
                .filter(|v| !v.is_empty() && v.as_str() != "0")
            {
                let rv = parse_rv(rv)?;
                let exact = q.get("resourceVersionMatch").is_some_and(|m| m == "Exact");
                if exact && rv != s.rv && rv < s.compacted {
                    return Err(expired(rv, s.compacted));
                }
            }
            (s.rv, None)
        }
    };
    let mut items = Vec::new();
    let mut next: Option<String> = None;
    let mut remaining = 0usize;
    for ((r, ons, oname), obj) in s.objects.iter() {
        if *r != res {
            continue;
        }
        if let Some((ans, aname)) = &after {
            if (ons, oname) <= (ans, aname) {
                continue;
            }
        }
        if !filter.matches(obj) {
            continue;
        }
        if limit.is_some_and(|l| items.len() >= l) {
            if next.is_none() {
                let last = items
                    .last()
                    .map(|(n, m): &(String, String)| (n.clone(), m.clone()))
                    .unwrap();
                next = Some(encode_continue(list_rv, &last.0, &last.1));
            }
            remaining += 1;
            continue;
        }
        items.push((ons.clone(), oname.clone()));
    }
    let items: Vec<Value> = items
        .iter()
        .map(|(ns, name)| {
            let mut obj = s.objects[&(res, ns.clone(), name.clone())].clone();
            if let Some(m) = obj.as_object_mut() {
                m.remove("apiVersion");
                m.remove("kind");
            }
            obj
        })
        .collect();
    let mut metadata = json!({"resourceVersion": list_rv.to_string()});
    if let Some(token) = next {
        metadata["continue"] = Value::String(token);
        metadata["remainingItemCount"] = json!(remaining);
    }
    Ok(json_response(
        200,
        &json!({"apiVersion": def.api_version(), "kind": def.list_kind(), "metadata": metadata, "items": items}),
    ))
}

pub(crate) fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&json!([rv, ns, name])).unwrap())
}

pub(crate) fn decode_continue(token: &str) -> Result<(u64, String, String), ApiError> {
    let bad = || ApiError::new(400, "BadRequest", "continue key is not valid");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: (u64, String, String) = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok(v)
}

pub(crate) fn parse_body(content_type: &str, body: &Bytes) -> Result<Value, ApiError> {
    let v: Result<Value, String> = if content_type.contains("yaml") {
        serde_yaml::from_slice(body).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(body).map_err(|e| e.to_string())
    };
    v.map_err(|e| ApiError::new(400, "BadRequest", format!("invalid body: {e}")))
}

pub(crate) fn check_namespace(
    res: usize,
    ns: &Option<String>,
    obj: &mut Value,
) -> Result<(), ApiError> {
    let def = &RESOURCES[res];
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    if def.namespaced {
        let Some(ns) = ns else {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "namespaced resource needs a namespace in the path",
            ));
        };
        match obj["metadata"]["namespace"].as_str() {
            Some(body_ns) if !body_ns.is_empty() && body_ns != ns => {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => obj["metadata"]["namespace"] = Value::String(ns.clone()),
        }
    }
    Ok(())
}

pub(crate) fn create(
    shared: &Shared,
    res: usize,
    ns: Option<String>,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let mut obj = parse_body("application/json", body)?;
    check_namespace(res, &ns, &mut obj)?;
    let mut s = shared.lock();
    if obj["metadata"]["name"].as_str().is_none_or(str::is_empty) {
        if let Some(prefix) = obj["metadata"]["generateName"].as_str().map(str::to_string) {
            s.uid_counter += 1;
            obj["metadata"]["name"] =
                Value::String(format!("{prefix}{:05x}", s.uid_counter & 0xfffff));
        }
    }
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("resourceVersion");
    }
    let (stored, _) = s.upsert(res, obj, true, false, false)?;
    Ok(json_response(201, &stored))
}

pub(crate) fn item(
    shared: &Shared,
    res: usize,
    ns: Option<String>,
    name: &str,
    method: &Method,
    content_type: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let def = &RESOURCES[res];
    let key_ns = ns.clone().unwrap_or_default();
    let key = (res, key_ns.clone(), name.to_string());
    match *method {
        Method::GET => {
            let s = shared.lock();
            s.objects
                .get(&key)
                .map(|o| json_response(200, o))
                .ok_or_else(|| ApiError::not_found(def, name))
        }
        Method::DELETE => {
            let mut s = shared.lock();
            s.remove(res, &key_ns, name)
                .map(|o| json_response(200, &o))
                .ok_or_else(|| ApiError::not_found(def, name))
        }
        Method::PUT => {
            let mut obj = parse_body(content_type, body)?;
            check_namespace(res, &ns, &mut obj)?;
            if obj["metadata"]["name"].as_str() != Some(name) {
                return Err(ApiError::new(
                    400,
                    "BadRequest",
                    "the name of the object does not match the name on the URL",
                ));
            }
            let (stored, _) = shared.lock().upsert(res, obj, false, true, true)?;
            Ok(json_response(200, &stored))
        }
        Method::PATCH => {
            let patch = parse_body(content_type, body)?;
            let mut s = shared.lock();
            let current = s.objects.get(&key).cloned();
            let is_apply = content_type.starts_with("application/apply-patch");
            // As kube-apiserver does: a resourceVersion in a patch is a precondition (409 when
            // the object has moved on); gpushare's ledger writes rely on it.
            let precondition = !is_apply && patch["metadata"]["resourceVersion"].is_string();
            let mut obj = match current {
                Some(o) => o,
                None if is_apply => json!({"metadata": {"name": name}}),
                None => return Err(ApiError::not_found(def, name)),
            };
            if content_type.starts_with("application/json-patch") {
                let p: json_patch::Patch = serde_json::from_value(patch).map_err(|e| {
                    ApiError::new(400, "BadRequest", format!("invalid JSON patch: {e}"))
                })?;
                json_patch::patch(&mut obj, &p).map_err(|e| {
                    ApiError::new(422, "Invalid", format!("JSON patch failed: {e}"))
                })?;
            } else {
                json_patch::merge(&mut obj, &patch);
            }
            check_namespace(res, &ns, &mut obj)?;
            obj["metadata"]["name"] = Value::String(name.to_string());
            let (stored, created) = s.upsert(res, obj, is_apply, true, precondition)?;
            Ok(json_response(if created { 201 } else { 200 }, &stored))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("method {method} not allowed"),
        )),
    }
}
