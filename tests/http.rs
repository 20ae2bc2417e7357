//! The REST API.

mod common;

use common::{http, http_json, start};

#[actix_web::test]
async fn symbols_quotes_health() {
    let server = start(&[]).await;
    let (status, symbols) = http_json(&server, "GET", "/api/symbols", None).await;
    assert_eq!(status, 200);
    let symbols = symbols.as_array().unwrap();
    assert!(symbols.len() >= 90, "the default universe has about 100 symbols");
    let aapl = symbols.iter().find(|s| s["symbol"] == "AAPL").expect("AAPL listed");
    assert_eq!((aapl["name"].as_str(), aapl["feed"].as_str()), (Some("Apple Inc."), Some("sim")));

    // Wait for a price, then read it back both ways.
    while server.state.bus.topic("AAPL").unwrap().seq() == 0 || server.state.bus.topic("MSFT").unwrap().seq() == 0 {
        actix_web::rt::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (status, body) = http(&server, "GET", "/api/quotes?symbols=aapl,MSFT,NOPE", None).await;
    assert_eq!(status, 200);
    // Quotes keep the documented field order (they are the same JSON the WebSocket sends).
    assert!(body.starts_with(r#"{"quotes":[{"symbol":"AAPL","seq":"#), "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(value["quotes"].as_array().unwrap().len(), 2);
    assert_eq!(value["unknown"], serde_json::json!(["NOPE"]));
    let (status, quote) = http_json(&server, "GET", "/api/quotes/aapl", None).await;
    assert_eq!((status, quote["symbol"].as_str()), (200, Some("AAPL")));
    let (status, error) = http_json(&server, "GET", "/api/quotes/ZZZZ", None).await;
    assert_eq!((status, error["error"].as_str()), (404, Some("unknown_symbol")));
    assert!(error["message"].as_str().unwrap().contains("ZZZZ"));

    assert_eq!(http(&server, "GET", "/healthz", None).await.0, 200);
    let (status, ready) = http_json(&server, "GET", "/readyz", None).await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    let (status, missing) = http_json(&server, "GET", "/nope", None).await;
    assert_eq!((status, missing["error"].as_str()), (404, Some("not_found")));
    server.shutdown().await;
}
