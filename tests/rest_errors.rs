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
