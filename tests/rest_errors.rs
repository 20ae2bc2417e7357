//! REST errors as the README documents them: every error answer is the JSON
//! `{"error": code, "message": text}` with `Content-Type: application/json`, whose message names
//! the parameter, field or route at fault; a known route asked with the wrong method is 405
//! with `Allow`; control bodies are checked field by field, the same way for every action.

mod common;

use common::{Response, http_full, http_json, http_raw, start};
use serde_json::{Value, json};
use tickerfeed::server::RunningServer;

/// Asserts `response` is a JSON error with this status and code; returns its message.
fn json_error(response: &Response, what: &str, status: u16, code: &str) -> String {
    let body = response.json(what);
    assert_eq!((response.status, body["error"].as_str()), (status, Some(code)), "{what}: {body}");
    assert_eq!(response.header("content-type"), Some("application/json"), "{what}: {body}");
    let message = body["message"].as_str().unwrap_or_else(|| panic!("{what}: no message in {body}"));
    assert!(!message.is_empty(), "{what}: empty message");
    message.to_string()
}

async fn control(server: &RunningServer, feed: &str, body: &str) -> Response {
    http_full(server, "POST", &format!("/api/feeds/{feed}/control"), Some(body)).await
}

async fn sim_status(server: &RunningServer) -> Value {
    let (status, feeds) = http_json(server, "GET", "/api/feeds", None).await;
    assert_eq!(status, 200);
    feeds.as_array().unwrap().iter().find(|f| f["name"] == "sim").cloned().expect("the sim feed is listed")
}

#[actix_web::test]
async fn bad_query_parameters_get_json_errors_naming_the_parameter() {
    let server = start(&[]).await;
    for (path, parameter, detail) in [
        ("/api/history/AAPL?limit=-1", "'limit'", "invalid digit"),
        ("/api/history/AAPL?limit=abc", "'limit'", "invalid digit"),
        ("/api/history/AAPL?limit=", "'limit'", "empty"),
        ("/api/history/AAPL?limit=5&limit=6", "'limit'", "2 times"),
        ("/api/history/AAPL?resolution=1s&resolution=1m", "'resolution'", "2 times"),
        ("/api/history/AAPL?resolution=7m", "'resolution'", "1s or 1m"),
    ] {
        let message = json_error(&http_full(&server, "GET", path, None).await, path, 400, "bad_request");
        assert!(message.starts_with(&format!("query parameter {parameter}")) && message.contains(detail), "{path}: {message}");
    }
    // Good values still work, and parameters the route does not take are ignored.
    let answer = http_full(&server, "GET", "/api/history/AAPL?limit=0&resolution=1m&cache=no", None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json("limit=0")["bars"], json!([]));
    server.shutdown().await;
}

#[actix_web::test]
async fn repeated_symbols_parameters_are_joined() {
    let server = start(&[]).await;
    for symbol in ["AAPL", "MSFT", "IBM"] {
        while server.bus.topic(symbol).unwrap().seq() == 0 {
            actix_web::rt::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
    let answer = http_full(&server, "GET", "/api/quotes?symbols=AAPL&symbols=msft,IBM&symbols=NOPE", None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let body = answer.json("joined symbols");
    let symbols: Vec<&str> = body["quotes"].as_array().unwrap().iter().map(|q| q["symbol"].as_str().unwrap()).collect();
    assert_eq!(symbols, ["AAPL", "MSFT", "IBM"]);
    assert_eq!(body["unknown"], json!(["NOPE"]));
    server.shutdown().await;
}

#[actix_web::test]
async fn oversized_control_bodies_get_413_json() {
    let server = start(&[]).await;
    // 300 KB with a Content-Length, and 70 KiB in chunks without one.
    let big = format!(r#"{{"action":"pause","padding":"{}"}}"#, "x".repeat(300_000));
    let message = json_error(&control(&server, "sim", &big).await, "300 KB body", 413, "payload_too_large");
    assert!(message.contains("control body") && message.contains("65536"), "{message}");
    let chunk = "y".repeat(10 * 1024);
    let mut request =
        format!("POST /api/feeds/sim/control HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", server.addr);
    for _ in 0..7 {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    let message = json_error(&http_raw(&server, request.as_bytes()).await, "70 KiB chunked body", 413, "payload_too_large");
    assert!(message.contains("65536"), "{message}");
    // A body at the limit is read (and refused only for what it says).
    let at_limit = format!(r#"{{"action":"pause","padding":"{}"}}"#, "x".repeat(65536 - 31));
    assert_eq!(at_limit.len(), 65536);
    let message = json_error(&control(&server, "sim", &at_limit).await, "body at the limit", 400, "bad_request");
    assert!(message.contains("'padding'"), "{message}");
    assert_eq!(sim_status(&server).await["state"], "running");
    server.shutdown().await;
}

#[actix_web::test]
async fn control_bodies_refuse_unknown_and_foreign_fields_for_every_action() {
    let server = start(&[]).await;
    let cases: &[(&str, &[&str])] = &[
        (r#"{"action":"pause","extra":1}"#, &["unknown field 'extra'", "action 'pause'", "takes only 'action'"]),
        (r#"{"action":"resume","extra":1}"#, &["unknown field 'extra'", "action 'resume'", "takes only 'action'"]),
        (r#"{"action":"speed","value":600,"bogus":1}"#, &["unknown field 'bogus'", "action 'speed'", "'action' and 'value'"]),
        (r#"{"action":"seek","to":"2008-09-15","bogus":1}"#, &["unknown field 'bogus'", "action 'seek'", "'action' and 'to'"]),
        (r#"{"action":"pause","value":2}"#, &["field 'value' belongs to action 'speed'", "action 'pause' takes only 'action'"]),
        (r#"{"action":"resume","to":"2008-09-15"}"#, &["field 'to' belongs to action 'seek'", "action 'resume' takes only 'action'"]),
        (r#"{"action":"speed","value":2,"to":"2008-09-15"}"#, &["field 'to' belongs to action 'seek'", "'action' and 'value'"]),
        (r#"{"action":"pause","action":"resume"}"#, &["field 'action' appears more than once"]),
        (r#"{"action":"speed"}"#, &["action 'speed' needs field 'value'"]),
        (r#"{"action":"speed","value":"fast"}"#, &["field 'value'", "a number"]),
        (r#"{"action":"seek"}"#, &["action 'seek' needs field 'to'"]),
        (r#"{"action":"dance"}"#, &["unknown action 'dance'", "pause, resume, seek or speed"]),
        (r#"{"action":7}"#, &["field 'action'", "a string"]),
        (r#"{"value":7}"#, &["missing field 'action'"]),
        (r#"["pause"]"#, &["a JSON object"]),
        (r#"{oops"#, &["not JSON"]),
        ("", &["not JSON"]),
    ];
    for (body, expected) in cases {
        let message = json_error(&control(&server, "sim", body).await, body, 400, "bad_request");
        for part in *expected {
            assert!(message.contains(part), "{body}: {message:?} lacks {part:?}");
        }
    }
    // Nothing was applied: the feed runs at its configured speed.
    let status = sim_status(&server).await;
    assert_eq!((status["state"].as_str(), status["speed"].as_f64()), (Some("running"), Some(600.0)));
    // The same bodies without the stray field are accepted.
    assert_eq!(control(&server, "sim", r#"{"action":"pause"}"#).await.json("pause")["state"], "paused");
    assert_eq!(control(&server, "sim", r#"{"action":"resume"}"#).await.json("resume")["state"], "running");
    assert_eq!(control(&server, "sim", r#"{"action":"speed","value":600}"#).await.status, 200);
    server.shutdown().await;
}

#[actix_web::test]
async fn sim_speed_rule_at_its_boundaries() {
    let server = start(&[]).await;
    let rule = "a simulation's speed (model seconds per wall second) must be > 0 and <= 1e12";
    for (value, shown) in [(json!(0), "0"), (json!(-1), "-1"), (json!(1.000001e12), "1000001000000")] {
        let body = json!({"action":"speed","value":value}).to_string();
        let message = json_error(&control(&server, "sim", &body).await, &body, 400, "bad_request");
        assert_eq!(message, format!("invalid speed {shown} for feed 'sim': {rule}"));
    }
    for value in [json!(1e-9), json!(1e12), json!(600)] {
        let body = json!({"action":"speed","value":value}).to_string();
        let answer = control(&server, "sim", &body).await;
        assert_eq!((answer.status, answer.json(&body)["speed"].as_f64()), (200, value.as_f64()), "{body}");
    }
    server.shutdown().await;
}

#[actix_web::test]
async fn wrong_method_on_a_known_route_is_405_with_allow() {
    let server = start(&[]).await;
    for (method, path, allow) in [
        ("GET", "/api/feeds/sim/control", "POST"),
        ("POST", "/api/symbols", "GET, HEAD"),
        ("DELETE", "/api/quotes", "GET, HEAD"),
        ("PUT", "/api/quotes/AAPL", "GET, HEAD"),
        ("POST", "/api/history/AAPL", "GET, HEAD"),
        ("POST", "/api/feeds", "GET, HEAD"),
        ("POST", "/healthz", "GET, HEAD"),
        ("POST", "/metrics", "GET, HEAD"),
        ("POST", "/", "GET, HEAD"),
        ("POST", "/app.js", "GET, HEAD"),
        ("POST", "/ws", "GET"),
    ] {
        let what = format!("{method} {path}");
        let answer = http_full(&server, method, path, None).await;
        let message = json_error(&answer, &what, 405, "method_not_allowed");
        assert_eq!(answer.header("allow"), Some(allow), "{what}");
        assert!(message.contains(method) && message.contains(path) && message.contains(allow), "{what}: {message}");
    }
    // Unknown paths stay 404, whatever the method.
    for (method, path) in [("GET", "/api/nope"), ("DELETE", "/api/nope"), ("POST", "/nothing.js"), ("GET", "/a/b/c")] {
        let message = json_error(&http_full(&server, method, path, None).await, path, 404, "not_found");
        assert!(message.contains(path), "{message}");
    }
    // HEAD is answered like GET, without the body.
    for path in ["/api/symbols", "/healthz", "/"] {
        let answer = http_full(&server, "HEAD", path, None).await;
        assert_eq!((answer.status, answer.body.as_str()), (200, ""), "HEAD {path}");
    }
    server.shutdown().await;
}

#[actix_web::test]
async fn errors_actix_produces_itself_are_json_too() {
    let server = start(&[]).await;
    // A plain GET of the WebSocket endpoint: the upgrade handshake fails inside actix.
    let message = json_error(&http_full(&server, "GET", "/ws", None).await, "GET /ws without upgrade", 400, "bad_request");
    assert!(message.to_lowercase().contains("upgrade"), "{message}");
    // An upgrade asking for a WebSocket version actix does not speak: 426, and the headers that
    // say which version to use are kept.
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        server.addr
    );
    let answer = http_raw(&server, request.as_bytes()).await;
    let message = json_error(&answer, "GET /ws version 8", 426, "upgrade_required");
    assert!(message.to_lowercase().contains("version"), "{message}");
    assert_eq!(answer.header("sec-websocket-version"), Some("13"));
    server.shutdown().await;
}
