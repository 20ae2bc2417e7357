//! Replay feeds end to end: loading, pacing control over REST, seek statistics, bad files.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{Client, http_json, repo_path, start, try_config};
use serde_json::{Value, json};

async fn feed_status(server: &tickerfeed::server::RunningServer, name: &str) -> Value {
    let (status, feeds) = http_json(server, "GET", "/api/feeds", None).await;
    assert_eq!(status, 200);
    feeds.as_array().unwrap().iter().find(|f| f["name"] == name).cloned().unwrap_or_else(|| panic!("feed {name} listed: {feeds}"))
}

async fn control(server: &tickerfeed::server::RunningServer, feed: &str, body: Value) -> (u16, Value) {
    http_json(server, "POST", &format!("/api/feeds/{feed}/control"), Some(&body.to_string())).await
}

#[actix_web::test]
async fn replay_runs_to_the_end_and_counts_rows() {
    let stocks = repo_path("feeds/stocks.csv");
    let server = start(&["--replay", &stocks, "--speed", "0"]).await;
    // Only the replay runs: the simulation is off.
    let feeds = http_json(&server, "GET", "/api/feeds", None).await.1;
    assert_eq!(feeds.as_array().unwrap().len(), 1);
    loop {
        let status = feed_status(&server, "replay").await;
        assert_eq!(status["kind"], "replay");
        assert_eq!((status["rows_read"].as_u64(), status["rows_skipped"].as_u64()), (Some(560), Some(0)));
        if status["state"] == "finished" {
            assert_eq!(status["quotes_published"], 560);
            assert_eq!(status["clock_iso"], "2010-03-01T00:00:00.000Z");
            break;
        }
    }
    let (status, quote) = http_json(&server, "GET", "/api/quotes/AAPL", None).await;
    assert_eq!(status, 200);
    // The last AAPL row of stocks.csv: Mar 1 2010, 223.02.
    assert_eq!((quote["last"].as_f64(), quote["ts"].as_i64()), (Some(223.02), Some(1_267_401_600_000)));
    assert!(quote["bid"].as_f64() < quote["ask"].as_f64());
    server.shutdown().await;
}

/// The close of the last SPX bar before `day` (ISO date), from the file itself.
fn previous_close(day: &str) -> f64 {
    let text = std::fs::read_to_string(repo_path("feeds/sp500-2000.csv")).unwrap();
    let mut close = f64::NAN;
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        if fields[0] >= day {
            break;
        }
        close = fields[4].parse().unwrap();
    }
    close
}

#[actix_web::test]
async fn pause_resume_seek_and_speed_over_rest() {
    let config_file = repo_path("feeds/demo-replay.toml");
    let server = start(&["--config", &config_file, "--speed", "864000"]).await;
    // The demo runs beside the simulation, with suffixed symbols.
    assert!(server.bus.topic("AAPL").is_some());
    assert!(server.bus.topic("AAPL.H").is_some());
    assert!(server.bus.topic("SPX.H").is_some());
    let (mut client, _) = Client::connect_welcomed(&server).await;
    client.send(json!({"op":"subscribe","symbols":["SPX.H"],"throttle_ms":0,"snapshot":false})).await;
    client.recv_type("subscribed").await;
    client.recv_type("quotes").await;

    let (status, paused) = control(&server, "history", json!({"action":"pause"})).await;
    assert_eq!((status, paused["state"].as_str()), (200, Some("paused")));
    // Sessions are told, so a client can tell a paused feed from a dead connection.
    let event = client.recv_type("feed").await;
    assert_eq!((event["name"].as_str(), event["state"].as_str()), (Some("history"), Some("paused")));
    let clock_at_pause = feed_status(&server, "history").await["clock"].as_i64().unwrap();
    let seq_at_pause = server.bus.topic("SPX.H").unwrap().seq();
    // Paused means silent: whatever arrives now was published before the pause.
    while let Some(message) = client.next_message_within(Duration::from_millis(400)).await {
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            for quote in value["quotes"].as_array().into_iter().flatten() {
                assert!(quote["seq"].as_u64().unwrap() <= seq_at_pause, "a quote published while paused: {quote}");
            }
        }
    }
    assert_eq!(server.bus.topic("SPX.H").unwrap().seq(), seq_at_pause);

    let (status, resumed) = control(&server, "history", json!({"action":"resume"})).await;
    assert_eq!((status, resumed["state"].as_str()), (200, Some("running")));
    assert_eq!(client.recv_type("feed").await["state"], "running");
    let frame = client.recv_type("quotes").await;
    assert!(frame["quotes"][0]["seq"].as_u64().unwrap() > seq_at_pause);
    loop {
        let clock = feed_status(&server, "history").await["clock"].as_i64().unwrap();
        if clock > clock_at_pause {
            break;
        }
    }

    // Seek: the clock jumps, seq keeps increasing, the day's statistics are recomputed.
    let seq_before_seek = server.bus.topic("SPX.H").unwrap().seq();
    let (status, sought) = control(&server, "history", json!({"action":"seek","to":"2008-09-15"})).await;
    assert_eq!(status, 200, "{sought}");
    assert!(sought["clock_iso"].as_str().unwrap().starts_with("2008-09-15"), "{sought}");
    let day_start = 1_221_436_800_000i64; // 2008-09-15T00:00:00Z
    loop {
        let frame = client.recv_type("quotes").await;
        let quote = &frame["quotes"][0];
        let ts = quote["ts"].as_i64().unwrap();
        if ts < day_start {
            continue; // published before the seek took effect
        }
        assert!(quote["seq"].as_u64().unwrap() > seq_before_seek, "seq never goes back");
        if ts < day_start + 86_400_000 {
            assert_eq!(quote["prev_close"].as_f64().unwrap(), previous_close("2008-09-15"));
            assert!(quote["low"].as_f64() <= quote["last"].as_f64() && quote["last"].as_f64() <= quote["high"].as_f64());
        }
        break;
    }

    let (status, faster) = control(&server, "history", json!({"action":"speed","value":3600})).await;
    assert_eq!((status, faster["speed"].as_f64()), (200, Some(3600.0)));
    server.shutdown().await;
}

#[actix_web::test]
async fn bad_control_requests_get_json_errors() {
    let config_file = repo_path("feeds/demo-replay.toml");
    let server = start(&["--config", &config_file]).await;
    let cases = [
        ("history", json!({"action":"dance"}), 400, "bad_request"),
        ("history", json!({"action":"seek","to":"not a date"}), 400, "bad_request"),
        ("history", json!({"action":"seek","to":"2030-01-01"}), 400, "bad_request"),
        ("history", json!({"action":"speed","value":-1}), 400, "bad_request"),
        ("history", json!({"action":"speed"}), 400, "bad_request"),
        ("nosuchfeed", json!({"action":"pause"}), 404, "unknown_feed"),
        ("sim", json!({"action":"seek","to":"2008-09-15"}), 409, "unsupported"),
    ];
    for (feed, body, code, error) in cases {
        let (status, answer) = control(&server, feed, body.clone()).await;
        assert_eq!((status, answer["error"].as_str()), (code, Some(error)), "{body} -> {answer}");
        assert!(!answer["message"].as_str().unwrap().is_empty());
    }
    let (status, answer) = http_json(&server, "POST", "/api/feeds/history/control", Some("{oops")).await;
    assert_eq!((status, answer["error"].as_str()), (400, Some("bad_request")));
    // The feed still runs.
    assert_eq!(feed_status(&server, "history").await["state"], "running");
    server.shutdown().await;
}

#[actix_web::test]
async fn bad_rows_are_skipped_and_counted() {
    let mut file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
    writeln!(file, "timestamp,symbol,price,size").unwrap();
    writeln!(file, "2024-01-02T14:30:00Z,ABC,10.00,100").unwrap();
    writeln!(file, "2024-01-02T14:30:01Z,ABC,notanumber,100").unwrap();
    writeln!(file, "yesterday,ABC,10.10,100").unwrap();
    writeln!(file, "2024-01-02T14:30:02Z,ABC,-5,100").unwrap();
    writeln!(file, "2024-01-02T14:30:03Z,ABC,10.20,100").unwrap();
    let path = file.path().to_str().unwrap().to_string();
    let server = start(&["--replay", &path, "--speed", "0"]).await;
    let status = feed_status(&server, "replay").await;
    assert_eq!((status["rows_read"].as_u64(), status["rows_skipped"].as_u64()), (Some(5), Some(3)));
    server.shutdown().await;
}

#[actix_web::test]
async fn unusable_files_stop_startup_with_their_name() {
    let missing = "/nonexistent/prices.csv";
    let err = tickerfeed::server::start(try_config(&["--replay", missing]).unwrap()).await.err().expect("a missing file fails startup");
    assert!(err.to_string().contains(missing), "{err}");

    let mut file = tempfile::Builder::new().suffix(".csv").tempfile().unwrap();
    writeln!(file, "timestamp,symbol,price\nnope,ABC,x").unwrap();
    let path = file.path().to_str().unwrap().to_string();
    let err = tickerfeed::server::start(try_config(&["--replay", &path]).unwrap()).await.err().expect("no usable row fails startup");
    assert!(err.to_string().contains(&path), "{err}");

    // The same symbol from two feeds: both feeds are named.
    let stocks = repo_path("feeds/stocks.csv");
    let err = tickerfeed::server::start(try_config(&["--replay", &stocks, "--sim"]).unwrap()).await.err().expect("a symbol published twice fails startup");
    let message = err.to_string();
    assert!(message.contains("published by two feeds") && message.contains("'sim'") && message.contains("'replay'"), "{message}");
}

#[test]
fn the_binary_exits_non_zero_naming_a_bad_file() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tickerfeed")).args(["--bind", "127.0.0.1:0", "--replay", "/nonexistent/prices.csv"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/prices.csv"), "{stderr}");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tickerfeed")).args(["--throttle-ms", "99999999"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("throttle_ms"));
}

#[actix_web::test]
async fn fixed_interval_pacing_spaces_rows() {
    let stocks = repo_path("feeds/stocks.csv");
    let server = start(&["--replay", &stocks, "--interval-ms", "20"]).await;
    let started = std::time::Instant::now();
    loop {
        let published = feed_status(&server, "replay").await["quotes_published"].as_u64().unwrap();
        if published >= 30 {
            break;
        }
    }
    // 30 rows at 20 ms each cannot be published in less than 29 intervals.
    assert!(started.elapsed() >= Duration::from_millis(29 * 20), "{:?}", started.elapsed());
    let status = feed_status(&server, "replay").await;
    assert_eq!(status["state"], "running");
    server.shutdown().await;
}

#[actix_web::test]
async fn seek_outside_the_data_is_refused_at_both_ends_and_moves_nothing() {
    // stocks.csv runs from 2000-01-01 to 2010-03-01, one row per symbol and month. At one history
    // second per wall second the feed publishes the first month and then waits a month.
    let stocks = repo_path("feeds/stocks.csv");
    let server = start(&["--replay", &stocks, "--speed", "1"]).await;
    let (status, paused) = control(&server, "replay", json!({"action":"pause"})).await;
    assert_eq!((status, paused["state"].as_str()), (200, Some("paused")), "{paused}");
    let range = "which runs from 2000-01-01T00:00:00.000Z to 2010-03-01T00:00:00.000Z";
    for (to, shown) in [
        ("1999-12-31T23:59:59.999Z", "1999-12-31T23:59:59.999Z"),
        ("1990-06-01", "1990-06-01T00:00:00.000Z"),
        ("2010-03-01T00:00:00.001Z", "2010-03-01T00:00:00.001Z"),
        ("2030-01-01", "2030-01-01T00:00:00.000Z"),
    ] {
        let before = feed_status(&server, "replay").await;
        let seq_before = server.bus.topic("AAPL").unwrap().seq();
        let (status, answer) = control(&server, "replay", json!({"action":"seek","to":to})).await;
        assert_eq!((status, answer["error"].as_str()), (400, Some("bad_request")), "seek to {to}: {answer}");
        assert_eq!(answer["message"], format!("seek to {shown} is outside the replayed data, {range}"), "seek to {to}");
        // Refused means untouched: same state, clock and counters, nothing published.
        assert_eq!(feed_status(&server, "replay").await, before, "seek to {to} moved the feed");
        assert_eq!(server.bus.topic("AAPL").unwrap().seq(), seq_before);
    }
    // Both ends themselves are inside.
    for (to, clock) in [("2010-03-01", "2010-03-01T00:00:00.000Z"), ("2000-01-01", "2000-01-01T00:00:00.000Z")] {
        let (status, answer) = control(&server, "replay", json!({"action":"seek","to":to})).await;
        assert_eq!(status, 200, "seek to {to}: {answer}");
        assert_eq!((answer["clock_iso"].as_str(), answer["state"].as_str()), (Some(clock), Some("paused")), "seek to {to}");
    }
    server.shutdown().await;
}

#[actix_web::test]
async fn a_date_names_its_whole_day_so_intraday_data_can_be_sought_by_date() {
    // The ticks start at 2024-01-02T08:00:00Z and end 4 s later: the date picker's
    // "2024-01-02" (midnight) is inside the data, the same midnight as a datetime is not.
    let ticks = repo_path("tests/fixtures/replay/eurusd-ticks.csv");
    let server = start(&["--replay", &ticks, "--speed", "0.001"]).await;
    assert_eq!(control(&server, "replay", json!({"action":"pause"})).await.0, 200);
    let (status, answer) = control(&server, "replay", json!({"action":"seek","to":"2024-01-02"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["clock_iso"], "2024-01-02T08:00:00.000Z", "a date starts at its day's first row");
    let range = "which runs from 2024-01-02T08:00:00.000Z to 2024-01-02T08:00:04.000Z";
    for (to, shown) in [
        ("2024-01-02T00:00:00Z", "2024-01-02T00:00:00.000Z"),
        ("2024-01-02T07:59:59.999Z", "2024-01-02T07:59:59.999Z"),
        ("2024-01-01", "2024-01-01T00:00:00.000Z"),
        ("2024-01-03", "2024-01-03T00:00:00.000Z"),
    ] {
        let (status, answer) = control(&server, "replay", json!({"action":"seek","to":to})).await;
        assert_eq!(status, 400, "seek to {to}: {answer}");
        assert_eq!(answer["message"], format!("seek to {shown} is outside the replayed data, {range}"), "seek to {to}");
    }
    server.shutdown().await;
}

#[actix_web::test]
async fn replay_speed_rule_at_its_boundaries() {
    let stocks = repo_path("feeds/stocks.csv");
    let server = start(&["--replay", &stocks, "--speed", "1"]).await;
    let rule = "a replay's speed (history seconds per wall second) must be >= 0 and <= 1e12; 0 replays as fast as possible";
    for (value, shown) in [(json!(-1), "-1"), (json!(-1e-9), "-0.000000001"), (json!(1.000001e12), "1000001000000")] {
        let (status, answer) = control(&server, "replay", json!({"action":"speed","value":value})).await;
        assert_eq!((status, answer["error"].as_str()), (400, Some("bad_request")), "speed {value}: {answer}");
        assert_eq!(answer["message"], format!("invalid speed {shown} for feed 'replay': {rule}"));
    }
    for value in [json!(1e12), json!(1), json!(0)] {
        let (status, answer) = control(&server, "replay", json!({"action":"speed","value":value})).await;
        assert_eq!((status, answer["speed"].as_f64()), (200, value.as_f64()), "speed {value}: {answer}");
    }
    server.shutdown().await;
}
